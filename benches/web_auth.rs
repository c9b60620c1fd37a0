//! What basic authentication costs per request: a bcrypt check at the costs people
//! use (htpasswd -B defaults to 5, exporter-toolkit's docs use 10), and the cached
//! check that every scrape after the first one takes.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use nodediag::http::auth::PasswordChecker;
use std::collections::BTreeMap;

fn bcrypt_costs(c: &mut Criterion) {
    let mut g = c.benchmark_group("basic_auth");
    g.sample_size(10);
    for cost in [5, 10, 12] {
        let hash = bcrypt::hash("s3cret", cost).unwrap();
        g.bench_function(format!("bcrypt_verify_cost_{cost}"), |b| {
            b.iter(|| bcrypt::verify(black_box("s3cret"), &hash).unwrap())
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let checker = PasswordChecker::default();
    let mut users = BTreeMap::new();
    users.insert(
        "prometheus".to_string(),
        bcrypt::hash("s3cret", 10).unwrap(),
    );
    assert!(runtime.block_on(checker.check(&users, "prometheus", "s3cret")));
    g.sample_size(100);
    g.bench_function("cached_check_cost_10", |b| {
        b.iter(|| runtime.block_on(checker.check(&users, black_box("prometheus"), "s3cret")))
    });
    g.finish();
}

criterion_group!(benches, bcrypt_costs);
criterion_main!(benches);
