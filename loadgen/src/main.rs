//! `matchchat-loadgen`: runs one load (see `--help`), prints the figures as one JSON line
//! on stdout and a human summary on stderr. Exit status 0 when the run had no loss, no
//! duplicate, no reordering, no identity mix-up and no error; 1 otherwise; 2 when it
//! could not run at all.

use clap::Parser;
use matchchat_loadgen::{Options, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    let opts = Options::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if opts.threads > 0 {
        runtime.worker_threads(opts.threads);
    }
    let runtime = match runtime.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("matchchat-loadgen: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&opts)) {
        Ok(report) => {
            println!("{}", report.to_json());
            if !opts.quiet {
                eprint!("{}", report.summary());
            }
            let clean = report.lost == 0
                && report.dup == 0
                && report.reorder == 0
                && report.identity_errors == 0
                && report.errors == 0;
            if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("matchchat-loadgen: {e}");
            ExitCode::from(2)
        }
    }
}
