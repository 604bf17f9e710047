//! Build facts for `pillion version` and the `pillion_build_info` metric: the
//! git commit (`PILLION_COMMIT` when set, as in an image build without
//! `.git`; else `git rev-parse`; else "unknown") and the target triple.

use std::process::Command;

fn main() {
    let commit = std::env::var("PILLION_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
                .filter(|c| !c.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=PILLION_COMMIT={commit}");
    println!(
        "cargo:rustc-env=PILLION_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    println!("cargo:rerun-if-env-changed=PILLION_COMMIT");
    // A new commit moves the branch ref, not HEAD itself. Only paths that
    // exist: Cargo runs a build script again every time for a missing one.
    let mut watch = vec![".git/HEAD".to_owned(), ".git/packed-refs".to_owned()];
    if let Ok(head) = std::fs::read_to_string(".git/HEAD") {
        if let Some(r) = head.strip_prefix("ref: ") {
            watch.push(format!(".git/{}", r.trim()));
        }
    }
    for path in watch.iter().filter(|p| std::path::Path::new(p).is_file()) {
        println!("cargo:rerun-if-changed={path}");
    }
    // Without .git (an image build), the script depends on nothing else.
    println!("cargo:rerun-if-changed=build.rs");
}
