//! The bundled knowledge base and intents are compiled into the binary
//! (`knowledge::bundle`); rebuild when a content file is added, removed or edited.
fn main() {
    println!("cargo:rerun-if-changed=knowledge-base");
    println!("cargo:rerun-if-changed=intents");
}
