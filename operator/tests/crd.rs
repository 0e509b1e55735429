//! The CRD YAML is generated from the Rust types, never edited by hand:
//! these fail when a checked-in copy drifts (run `just crds`).

use std::path::Path;

fn checked_in(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn crds_folder_matches_the_types() {
    assert!(
        checked_in("crds/promotion.yaml") == promotion_crd::crd_yaml(),
        "crds/promotion.yaml is stale: run `just crds`"
    );
}

#[test]
fn chart_copy_matches_the_types() {
    assert!(
        checked_in("charts/promotion-system/crds/promotion.yaml") == promotion_crd::crd_yaml(),
        "the chart's CRD is stale: run `just crds`"
    );
}

#[test]
fn kubectl_get_shows_type_phase_remaining_age() {
    let crd: serde_json::Value = serde_yaml::from_str(&promotion_crd::crd_yaml()).unwrap();
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "promo");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    let columns: Vec<(&str, &str)> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["jsonPath"].as_str().unwrap()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Type", ".spec.type"),
            ("Phase", ".status.phase"),
            ("Remaining", ".status.remaining"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
    assert!(version["subresources"]["status"].is_object());
    let rules = serde_json::to_string(&version["schema"]).unwrap();
    for rule in [
        "self.endsAt > self.startsAt",
        "self.minReplicas <= self.maxReplicas",
        "self.kind != 'Percent' || self.value <= 100",
        "has(self.timeSale)",
    ] {
        assert!(rules.contains(rule), "CEL rule {rule} missing");
    }
}

fn manifests(dir: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no manifests in {}", dir.display());
    out
}

/// `promo standalone` has no API server: `Promotion::validate` must refuse
/// exactly what the CRD's schema and CEL rules refuse (chart-check runs the
/// same files through the schema).
#[test]
fn rust_validation_agrees_with_the_schema_on_every_manifest() {
    for dir in ["examples/promotions", "tests/promotions/valid"] {
        for (name, text) in manifests(dir) {
            for p in promotion_crd::parse_manifests(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
            {
                p.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }
    for (name, text) in manifests("tests/promotions/invalid") {
        let rejected = match promotion_crd::parse_manifests(&text) {
            Err(_) => true,
            Ok(ps) => ps.iter().any(|p| p.validate().is_err()),
        };
        assert!(
            rejected,
            "{name} passes Promotion::validate but the CRD rejects it"
        );
    }
}
