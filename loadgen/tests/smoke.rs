//! Smoke runs of the load generator, so that it cannot rot: a few pairs for about a
//! second, closed and open loop, against the real server started in-process and against
//! the baseline relay; every delivery must check out. Also the two reliability options:
//! a client that stops reading (`--stall-one`) and a flooder (`--flood-one`).

use matchchat_loadgen::{Options, Report, Target, baseline, run};
use std::time::Duration;

async fn server() -> matchchat_server::Running {
    server_with(|_| {}).await
}

async fn server_with(
    change: impl FnOnce(&mut matchchat_server::Config),
) -> matchchat_server::Running {
    let mut config = matchchat_server::Config {
        bind: "127.0.0.1:0".parse().expect("literal address"),
        static_dir: std::env::temp_dir().join("matchchat-no-client-here"),
        rate_per_sec: 1_000_000.0,
        rate_burst: 1_000_000.0,
        shutdown_grace_ms: 500,
        ..matchchat_server::Config::default()
    };
    change(&mut config);
    matchchat_server::start(config)
        .await
        .expect("server starts")
}

fn options(addr: std::net::SocketAddr, target: Target) -> Options {
    let mut opts = Options::new(addr.to_string());
    opts.target = target;
    opts.pairs = Some(4);
    opts.duration = 1.0;
    opts.match_timeout = 10.0;
    opts.drain_timeout = 3.0;
    opts.server_pid = Some(std::process::id());
    opts
}

fn assert_clean(report: &Report) {
    let summary = report.summary();
    assert_eq!(report.connected, 8, "{summary}");
    assert_eq!(report.matched, 8, "{summary}");
    assert!(report.delivered > 0, "{summary}");
    assert_eq!(report.lost, 0, "{summary}");
    assert_eq!(report.dup, 0, "{summary}");
    assert_eq!(report.reorder, 0, "{summary}");
    assert_eq!(report.identity_errors, 0, "{summary}");
    assert_eq!(report.errors, 0, "{summary}");
    assert!(report.latency_ms.count > 0, "{summary}");
    // The JSON line carries the same figures.
    let json = report.to_json();
    assert_eq!(json["delivered"], report.delivered);
    assert_eq!(json["lost"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_and_open_loop_against_the_server() {
    let server = server().await;
    let opts = options(server.local_addr(), Target::Server);
    let closed = run(&opts).await.expect("closed loop runs");
    assert_clean(&closed);
    assert!(
        closed.server_cpu_us_per_msg().is_some(),
        "{}",
        closed.summary()
    );

    let mut open = options(server.local_addr(), Target::Server);
    open.rate = Some(50.0);
    let open = run(&open).await.expect("open loop runs");
    assert_clean(&open);
    // 8 clients × 50 msgs/s × 1 s, give or take the edges of the window.
    assert!(open.delivered >= 300, "{}", open.summary());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_against_the_baseline() {
    let relay = baseline::start("127.0.0.1:0".parse().expect("literal address"))
        .await
        .expect("baseline starts");
    let mut opts = options(relay.local_addr(), Target::Baseline);
    opts.window = 4;
    let report = run(&opts).await.expect("baseline run");
    assert_clean(&report);
    relay.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_match_storm() {
    let server = server().await;
    let mut idle = options(server.local_addr(), Target::Server);
    idle.idle = true;
    idle.connections = Some(6);
    idle.pairs = None;
    idle.duration = 0.5;
    let report = run(&idle).await.expect("idle runs");
    assert_eq!(report.alive, 6, "{}", report.summary());
    assert!(report.server_rss_bytes_per_conn().is_some());

    let mut storm = options(server.local_addr(), Target::Server);
    storm.match_only = true;
    let report = tokio::time::timeout(Duration::from_secs(20), run(&storm))
        .await
        .expect("bounded")
        .expect("match storm runs");
    assert_eq!(report.matched, 8, "{}", report.summary());
    assert_eq!(report.errors, 0, "{}", report.summary());
    server.shutdown().await;
}

/// The checks catch what a broken relay does: drops, duplicates and reordering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_catch_a_faulty_relay() {
    let faulty = baseline::Relay {
        drop_every: 7,
        dup_every: 11,
        swap_every: 13,
        ..Default::default()
    };
    let relay = baseline::start_with("127.0.0.1:0".parse().expect("literal address"), faulty)
        .await
        .expect("baseline starts");
    let mut opts = options(relay.local_addr(), Target::Baseline);
    opts.drain_timeout = 1.0;
    let report = run(&opts).await.expect("faulty run");
    let summary = report.summary();
    assert!(report.delivered > 0, "{summary}");
    assert!(report.lost > 0, "{summary}");
    assert!(report.dup > 0, "{summary}");
    assert!(report.reorder > 0, "{summary}");
    relay.shutdown();
}

/// `--stall-one`: the client that stops reading is closed by the server once its (small)
/// queue is full; the other pairs are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_closed_and_the_others_are_not() {
    let server = server_with(|c| {
        c.history = 8;
        c.outbound_queue = 24;
    })
    .await;
    let mut opts = options(server.local_addr(), Target::Server);
    opts.pairs = Some(2);
    opts.rate = Some(20.0);
    opts.duration = 5.0;
    opts.stall_one = true;
    // ~3.9 KB messages at 500/s: the ~3 MB the kernel absorbs on loopback before the
    // server's queue starts to fill take 1.5 s, or a few seconds on a busy machine.
    opts.stall_rate = 500.0;
    let report = tokio::time::timeout(Duration::from_secs(30), run(&opts))
        .await
        .expect("bounded")
        .expect("stall run");
    let summary = report.summary();
    let stalled = report.stalled.as_ref().expect("stalled figures");
    assert!(stalled.peer_found, "{summary}");
    assert!(stalled.closed, "{summary}");
    assert!(stalled.after_ms.is_some(), "{summary}");
    assert!(stalled.peer_sent > 0, "{summary}");
    // The other pair: every delivery checks out.
    assert_eq!(report.matched, 4, "{summary}");
    assert!(report.delivered > 0, "{summary}");
    assert_eq!(report.lost, 0, "{summary}");
    assert_eq!(report.dup, 0, "{summary}");
    assert_eq!(report.reorder, 0, "{summary}");
    assert_eq!(report.errors, 0, "{summary}");
    let json = report.to_json();
    assert_eq!(json["stalled"]["closed"], true);
    assert!(json["server"]["rss_kib_max"].as_u64().is_some(), "{json}");
    server.shutdown().await;
}

/// `--flood-one`: the flooder gets 40009s and, as it keeps on, the close (1008, after
/// 200 rejected frames); the pairs at 5 msgs/s stay under the limit (20/s, burst 40) and
/// are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_is_rate_limited_and_closed() {
    let server = server_with(|c| {
        c.rate_per_sec = 20.0;
        c.rate_burst = 40.0;
        c.flood_close_after = 200;
    })
    .await;
    let mut opts = options(server.local_addr(), Target::Server);
    opts.rate = Some(5.0);
    opts.duration = 2.0;
    opts.flood_one = true;
    let report = tokio::time::timeout(Duration::from_secs(30), run(&opts))
        .await
        .expect("bounded")
        .expect("flood run");
    let summary = report.summary();
    let flooder = report.flooder.as_ref().expect("flooder figures");
    assert!(flooder.connected, "{summary}");
    assert!(flooder.rate_limited_40009 >= 1, "{summary}");
    assert!(flooder.closed, "{summary}");
    assert_eq!(flooder.close_code, Some(1008), "{summary}");
    assert_clean(&report);
    let json = report.to_json();
    assert!(json["flooder"]["rate_limited_40009"].as_u64() >= Some(1));
    server.shutdown().await;
}
