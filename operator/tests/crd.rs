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
