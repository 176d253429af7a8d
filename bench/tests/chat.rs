//! The chat scenario's quick form (`bench --quick --rounds 1 --only chat`),
//! so that the chat load generator, and issue 14's hello burst in it,
//! cannot rot: CI runs it (`cargo test -p bench`, in `.ci/run`). It runs
//! the four chat relays with 1,000 clients each; the run fails on any
//! missing, garbled or repeated hello (the load generator checks each of
//! the 999,000), so success means every client heard every hello. No
//! figure is judged here: speed belongs to the benchmark's report.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn quick_chat_hears_every_hello() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let markdown = dir.join("chat-quick.md");
    let _ = std::fs::remove_file(&markdown);
    // The run ends by itself: 2 s of senders per server, then bounded
    // waits (the drain's 10 s, the burst's 60 s) if something is wrong;
    // it never needs a timeout from here.
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--quick", "--rounds", "1", "--only", "chat N="])
        .arg("--markdown")
        .arg(&markdown)
        .arg("--chart")
        .arg(dir.join("chat-quick.svg"))
        .output()
        .expect("run bench --quick --only chat");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the quick chat run failed: {}\n{stdout}\n{stderr}",
        output.status
    );
    let tables = std::fs::read_to_string(&markdown).expect("the tables");
    assert!(
        tables.contains("| server | hello burst, ms until all heard every hello |"),
        "{tables}"
    );
    // Each server that ran reports a burst, and frontdesk's turn mode
    // runs on any machine that can hold 1,000 clients.
    let burst_rows: Vec<&str> = tables
        .lines()
        .skip_while(|line| !line.starts_with("| server | hello burst"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .collect();
    assert_eq!(burst_rows.len(), 4, "{tables}");
    let turns = burst_rows
        .iter()
        .find(|row| row.starts_with("| frontdesk-turns"))
        .expect("a frontdesk-turns row");
    let ms = turns.split('|').nth(2).unwrap_or_default().trim();
    assert!(
        ms.replace(',', "").parse::<f64>().is_ok_and(|v| v > 0.0),
        "{turns}"
    );
    assert!(
        tables.contains("chat: hello burst, all heard every hello within 2× epoll's time"),
        "{tables}"
    );
    for server in ["std", "tokio", "epoll", "frontdesk-turns"] {
        let line = stderr
            .lines()
            .find(|line| line.contains(&format!("round 1  {server} ")))
            .unwrap_or_else(|| panic!("no line for {server}:\n{stderr}"));
        assert!(
            line.contains("hello burst") || line.contains("not run"),
            "{line}"
        );
    }
}
