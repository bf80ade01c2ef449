//! Per-message matching cost with 10, 1,000 and 10,000 keyword rules, and normalisation alone.
//! Goal: under 20 µs per 200-character message at 10,000 rules.

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wtsbot::rules::normalize::normalize;
use wtsbot::rules::{MatchInput, Rule, SessionFacts, Snapshot};

/// 200 characters of a realistic customer message, accents included, naming rule 7's keyword.
const MESSAGE: &str = "Bom dia! Comprei o aparelho na semana passada e preciso das instruções \
                       para o modelo 7x, porque a instalação não está funcionando direito. \
                       Vocês podem me enviar o manual completo? Obrigada, Ana Souza.";

fn keyword_rule(i: usize) -> Rule {
    let text = format!(
        r#"
id = "rule-{i:05}"
priority = {priority}
[when]
text_any = ["produto {i}", "modelo {i}x", "peca{i}*", "codigo {i} de instalação"]
text_none = ["cancelar pedido {i}"]
[[reply]]
text = "Olá {{{{contact.name | \"cliente\"}}}}, segue o material do modelo {i}."
"#,
        priority = i % 50
    );
    toml::from_str(&text).expect("benchmark rules are valid TOML")
}

fn arrival() -> DateTime<Utc> {
    DateTime::from_timestamp(1_772_463_600, 0).expect("a valid timestamp")
}

fn bench_normalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize");
    group.throughput(Throughput::Bytes(MESSAGE.len() as u64));
    group.bench_function("200 chars, accented", |b| {
        b.iter(|| normalize(black_box(MESSAGE)))
    });
    let ascii = normalize(MESSAGE);
    group.bench_function("200 chars, ascii", |b| {
        b.iter(|| normalize(black_box(&ascii)))
    });
    group.finish();
}

fn bench_evaluate(c: &mut Criterion) {
    assert_eq!(MESSAGE.chars().count(), 200);
    let session = SessionFacts::default();
    let input = MatchInput {
        event_type: "MESSAGE_RECEIVED",
        text: Some(MESSAGE),
        message_type: Some("TEXT"),
        arrived_at: arrival(),
    };
    let mut group = c.benchmark_group("evaluate");
    for rules in [10, 1_000, 10_000] {
        let snapshot = Snapshot::compile((0..rules).map(keyword_rule)).expect("rules compile");
        let matched = snapshot.evaluate(&input, Some(&session));
        assert_eq!(matched.len(), 1, "exactly rule 7 is a candidate");
        assert!(matched[0].matched);
        group.bench_with_input(
            BenchmarkId::new("keyword rules", rules),
            &snapshot,
            |b, s| b.iter(|| s.evaluate(black_box(&input), Some(&session))),
        );
        group.bench_with_input(
            BenchmarkId::new("needs_session", rules),
            &snapshot,
            |b, s| b.iter(|| s.needs_session(black_box(&input))),
        );
    }
    group.finish();
}

criterion_group!(benches, bench_normalize, bench_evaluate);
criterion_main!(benches);
