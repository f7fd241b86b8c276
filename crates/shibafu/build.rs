//! Links `shibafu` as a position-dependent executable. The same binary is
//! re-executed as every container's supervisor; in a PIE the dynamic loader
//! must relocate (and so dirty, per process) every page of vtables and other
//! pointer tables, about 1 MiB of private memory per supervisor. Linked
//! without PIE those pages stay clean and shared with the page cache.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
