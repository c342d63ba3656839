//! Runs the built-in `tracee-text` template's rules (and the helper rules under them) on regorus'
//! bytecode VM and on its interpreter, on the repository's Tracee detection fixture: prints the time
//! per evaluation of each and every rule on which the two disagree.

use std::path::PathBuf;
use std::time::Instant;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::vm::RegoVM;
use regorus::{Engine, Value};

const RUNS: u32 = 300;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let templates = root.join("agent/templates");
    let mut engine = Engine::new();
    engine.set_rego_v0(false);
    for module in [
        "lib/common.rego",
        "lib/render.rego",
        "lib/tracee.rego",
        "tracee-text.rego",
    ] {
        let path = templates.join(module);
        engine.add_policy(path.display().to_string(), std::fs::read_to_string(&path)?)?;
    }
    engine.add_policy(
        "wrapper".into(),
        "package w\nout := data.hooker.tracee.text\n".into(),
    )?;
    let event =
        root.join("tests/fixtures/tracee/v0.12-era-signature-dropped-executable-TRC-1022.json");
    let input = Value::from_json_str(&std::fs::read_to_string(&event)?)?;

    let mut rules = vec!["data.w.out".to_string()];
    rules.extend(
        ["title", "result", "result_severity", "result_finding"]
            .map(|r| format!("data.hooker.tracee.text.{r}")),
    );
    rules.extend(
        [
            "is_detection",
            "signature_id",
            "severity",
            "severity_name",
            "level",
            "facts",
            "card",
        ]
        .map(|r| format!("data.hooker.lib.tracee.{r}")),
    );
    println!("| rule | interpreter µs | VM µs | same result |");
    println!("|---|---:|---:|---|");
    for rule in &rules {
        let (interpreted, interpreter_us) = time(|| {
            engine.set_input(input.clone());
            engine.eval_rule(rule.clone()).map_err(|e| e.to_string())
        });
        let policy = engine.compile_with_entrypoint(&rule.as_str().into())?;
        let program = Compiler::compile_from_policy(&policy, &[rule.as_str()])?;
        let mut vm = RegoVM::new_with_policy(policy);
        vm.load_program(program);
        let (ran, vm_us) = time(|| {
            vm.set_input(input.clone());
            vm.execute_entry_point_by_name(rule)
                .map_err(|e| e.to_string())
        });
        let same = match (&interpreted, &ran) {
            (Ok(a), Ok(b)) if a == b => "yes".to_string(),
            (Ok(_), Ok(b)) => format!("**no**: VM gives {}", short(b)),
            (a, b) => format!("**no**: {a:?} / {b:?}"),
        };
        println!("| {rule} | {interpreter_us:.1} | {vm_us:.1} | {same} |");
    }
    Ok(())
}

/// The last result and the mean time per run in µs.
fn time<T>(mut run: impl FnMut() -> T) -> (T, f64) {
    let mut last = run();
    let started = Instant::now();
    for _ in 0..RUNS {
        last = run();
    }
    (
        last,
        started.elapsed().as_secs_f64() * 1e6 / f64::from(RUNS),
    )
}

fn short(value: &Value) -> String {
    let text = value.to_json_str().unwrap_or_default().replace('\n', " ");
    text.chars().take(60).collect()
}
