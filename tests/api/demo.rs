//! `wtsbot demo` as a new user runs it: from the repository's root, and from elsewhere.

use std::path::Path;
use std::process::{Command, Output};

fn demo(current_dir: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wtsbot"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("WTSBOT__")) {
        command.env_remove(name);
    }
    command
        .env_remove("RUST_LOG")
        .arg("demo")
        .current_dir(current_dir)
        .output()
        .expect("wtsbot runs")
}

#[test]
fn demo_shows_three_customers_and_two_answered() {
    let output = demo(Path::new(env!("CARGO_MANIFEST_DIR")));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for customer in [
        "1. Maria writes: \"Oi! Vocês podem me mandar o manual de instalação?\"",
        "2. João writes: \"Quanto custa o plano mensal?\"",
        "3. Ana writes: \"Bom dia!\"",
    ] {
        assert!(stdout.contains(customer), "{customer}\n{stdout}");
    }
    assert!(
        stdout.contains("rule manual         fired (text_any: matched \"manual\")"),
        "{stdout}"
    );
    assert!(stdout.contains("rule price-list     fired"), "{stdout}");
    assert!(
        stdout.contains("reply manual#2 file files/manual.pdf: sent, WTS message "),
        "{stdout}"
    );
    assert!(
        stdout.contains("reply price-list#2 file files/tabela-de-precos.pdf: sent"),
        "{stdout}"
    );
    assert!(stdout.contains("no reply"), "Ana gets none: {stdout}");
    assert!(
        stdout.contains("MESSAGE_SENT, ignored"),
        "the echoes are ignored: {stdout}"
    );
    assert!(
        stdout
            .trim_end()
            .ends_with("3 customers, 2 answered, 5 replies sent"),
        "{stdout}"
    );
}

#[test]
fn demo_outside_the_repository_says_where_to_run_it() {
    let elsewhere = tempfile::tempdir().unwrap();
    let output = demo(elsewhere.path());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no rules/ directory in"), "{stderr}");
    assert!(
        stderr.contains("run `wtsbot demo` from the root"),
        "{stderr}"
    );
}
