//! Standard output of the command-line subcommands (`validate`, `send`, `dlq`, `reload`,
//! `version`…): a reader that goes away (`hooker dlq list | head -c 100`) is an error the
//! subcommand returns and `main` ends quietly on, never a panic as with `println!`.

use std::fmt::Display;
use std::io::Write;

/// Writes `text` and a newline to standard output.
pub fn line(text: impl Display) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    stdout.flush()
}

/// Whether `error` (or what caused it) is a write to a closed pipe.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
