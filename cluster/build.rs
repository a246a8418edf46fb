//! Compiles the long-double helper behind INCRBYFLOAT (see `src/float.rs`).
fn main() {
    println!("cargo:rerun-if-changed=c/ldouble.c");
    cc::Build::new()
        .file("c/ldouble.c")
        .opt_level(2)
        .compile("hcldouble");
}
