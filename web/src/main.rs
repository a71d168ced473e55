//! Trunk's entry point: mounts the Yew app. Natively it only says what it is for.

#[cfg(target_arch = "wasm32")]
fn main() {
    matchchat_web::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("matchchat-web is a browser app: build it with `trunk build` (see README).");
}
