use super::*;

#[test]
fn the_openapi_document_describes_every_route_and_only_those() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    for (method, path) in ROUTES {
        let operation = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is not in openapi.json"))[*method];
        assert!(
            operation.is_object(),
            "{method} {path} is not in openapi.json"
        );
        assert!(
            operation["responses"].is_object(),
            "{method} {path} has no responses"
        );
    }
    for (path, operations) in paths {
        for method in operations.as_object().expect("operations").keys() {
            assert!(
                ROUTES.contains(&(method.as_str(), path.as_str())),
                "openapi.json describes {method} {path}, which the router does not serve"
            );
        }
    }
    // every $ref resolves
    let text = OPENAPI;
    for reference in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap_or_default();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }
}
