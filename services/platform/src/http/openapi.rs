//! What every operation of the merged OpenAPI document shares, added in one
//! place so the document says what the server enforces:
//! - ids in paths (and `Idempotency-Key`) follow [`crate::ids::check_id`]:
//!   1..=128 letters, digits and `. _ - : @`;
//! - the problem+json answers every operation can give: 400 (a malformed id,
//!   query or JSON), 404 where the path names something, 413/415/422 where
//!   there is a body, 401/403 on admin routes, 503 when a backend is away;
//! - a view that flattens a strict spec (`additionalProperties: false`) with
//!   its figures becomes one object, since `allOf` with a closed schema can
//!   never validate the extra figures;
//! - links from a 202 or 201 to the status read of what it created, so a
//!   client (or a stateful test) can follow them.

use serde_json::{json, Map, Value};
use utoipa::openapi::OpenApi;

use crate::ids::MAX_ID_BYTES;

/// The id pattern of [`crate::ids::check_id`].
pub const ID_PATTERN: &str = "^[A-Za-z0-9._:@-]+$";

/// `doc` with the rules above applied, as the JSON served. (Served as JSON,
/// not through utoipa's types: those write link fields in snake_case.)
pub fn complete(doc: &OpenApi) -> Value {
    let Ok(mut v) = serde_json::to_value(doc) else {
        return Value::Null;
    };
    add_problem_schema(&mut v);
    close_views(&mut v);
    ids_in_bodies(&mut v);
    let links = status_links(&v);
    if let Some(paths) = v.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                if !matches!(method.as_str(), "get" | "put" | "post" | "patch" | "delete") {
                    continue;
                }
                complete_operation(path, op, &links);
            }
        }
    }
    v
}

fn id_schema() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": MAX_ID_BYTES, "pattern": ID_PATTERN})
}

fn add_problem_schema(v: &mut Value) {
    let schemas = v
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut);
    if let Some(schemas) = schemas {
        schemas.insert(
            "Problem".into(),
            json!({
                "type": "object",
                "description": "An RFC 9457 problem; `code` is stable and machine-readable.",
                "required": ["type", "title", "status", "code"],
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "code": {"type": "string"}
                }
            }),
        );
    }
}

/// Request bodies (`…Body` schemas) carry ids too: `userId`, `orderId`,
/// `entryId` follow the same rule as ids in paths.
fn ids_in_bodies(v: &mut Value) {
    let Some(schemas) = v
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (name, schema) in schemas.iter_mut() {
        if !name.ends_with("Body") {
            continue;
        }
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (prop, p) in props.iter_mut() {
            if matches!(prop.as_str(), "userId" | "orderId" | "entryId") {
                let nullable = p
                    .get("type")
                    .and_then(Value::as_array)
                    .is_some_and(|t| t.contains(&json!("null")));
                let description = p.get("description").cloned();
                *p = id_schema();
                if nullable {
                    p["type"] = json!(["string", "null"]);
                }
                if let Some(d) = description {
                    p["description"] = d;
                }
            }
        }
    }
}

/// `allOf: [$ref Closed, {object}]` → one closed object with both.
fn close_views(v: &mut Value) {
    let Some(schemas) = v.pointer("/components/schemas").cloned() else {
        return;
    };
    let Some(out) = v
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (_, schema) in out.iter_mut() {
        let Some(parts) = schema.get("allOf").and_then(Value::as_array).cloned() else {
            continue;
        };
        let mut properties = Map::new();
        let mut required: Vec<Value> = Vec::new();
        let mut closed = false;
        for part in &parts {
            let part = match part.get("$ref").and_then(Value::as_str) {
                Some(r) => match r
                    .strip_prefix("#/components/schemas/")
                    .and_then(|n| schemas.get(n))
                {
                    Some(target) => target.clone(),
                    None => return,
                },
                None => part.clone(),
            };
            closed |= part.get("additionalProperties") == Some(&Value::Bool(false));
            if let Some(p) = part.get("properties").and_then(Value::as_object) {
                properties.extend(p.clone());
            }
            if let Some(r) = part.get("required").and_then(Value::as_array) {
                required.extend(r.iter().cloned());
            }
        }
        if !closed {
            continue;
        }
        let description = schema.get("description").cloned();
        *schema = json!({
            "type": "object",
            "required": required,
            "properties": properties,
            "additionalProperties": false,
        });
        if let Some(d) = description {
            schema["description"] = d;
        }
    }
}

/// operationId of the GET on each path, for links.
fn status_links(v: &Value) -> Vec<(&'static str, &'static str, String)> {
    let get = |path: &str| {
        v.pointer(&format!(
            "/paths/{}/get/operationId",
            path.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .map(str::to_string)
    };
    let mut links = Vec::new();
    if let Some(op) = get("/issue-requests/{requestId}") {
        links.push(("requestId", "requestId", op));
    }
    if let Some(op) = get("/orders/{orderId}") {
        links.push(("orderId", "orderId", op));
    }
    links
}

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

fn complete_operation(path: &str, op: &mut Value, links: &[(&'static str, &'static str, String)]) {
    let has_body = op.get("requestBody").is_some();
    let mut path_params = false;
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params.iter_mut() {
            let is_path = p.get("in") == Some(&json!("path"));
            let is_key = p.get("in") == Some(&json!("header"))
                && p.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case("idempotency-key"));
            if is_path {
                path_params = true;
            }
            if is_path || is_key {
                p["schema"] = id_schema();
            }
        }
    }
    let responses = op
        .as_object_mut()
        .map(|o| o.entry("responses").or_insert_with(|| json!({})));
    let Some(responses) = responses.and_then(Value::as_object_mut) else {
        return;
    };
    let mut add = |code: &str, description: &str| {
        responses
            .entry(code.to_string())
            .or_insert_with(|| problem(description));
        // A documented code without a body gets the problem body.
        if let Some(r) = responses.get_mut(code) {
            if r.get("content").is_none() {
                let d = r
                    .get("description")
                    .and_then(Value::as_str)
                    .filter(|d| !d.is_empty())
                    .unwrap_or(description)
                    .to_string();
                *r = problem(&d);
            }
        }
    };
    add("400", "invalid_id, invalid_query, malformed_json, unsupported_media_type, invalid_idempotency_key");
    add("503", "a backend is not answering; see Retry-After");
    if path_params {
        add("404", "the id names nothing");
    }
    if has_body {
        add("413", "body_too_large (over 64 KiB)");
        add("415", "unsupported_media_type");
        add("422", "invalid_body, or a rule of the operation");
    }
    if op_is_mutation(path) {
        add("409", "idempotency_in_progress, or a rule of the operation");
        add("422", "idempotency_key_reused, or a rule of the operation");
    }
    if path.starts_with("/admin/") {
        add("401", "admin_token_required");
        add("403", "invalid_admin_token");
    }
    // What a call creates can be read back: a V3 request by its requestId,
    // an order (201 or 202) by its orderId.
    let link = if path.ends_with("/issue") {
        links
            .iter()
            .find(|l| l.0 == "requestId")
            .map(|l| (l, &["202"][..]))
    } else if path.ends_with("/orders") && !path.starts_with("/orders") {
        links
            .iter()
            .find(|l| l.0 == "orderId")
            .map(|l| (l, &["201", "202"][..]))
    } else {
        None
    };
    if let Some(((field, param, operation), codes)) = link {
        for code in codes {
            if let Some(created) = responses.get_mut(*code) {
                created["links"] = json!({
                    "status": {
                        "operationId": operation,
                        "parameters": {(*param): format!("$response.body#/{field}")},
                        "description": "The status of what this call created."
                    }
                });
            }
        }
    }
}

fn op_is_mutation(path: &str) -> bool {
    !path.starts_with("/admin/")
        && (path.ends_with("/issue")
            || path.ends_with("/orders")
            || path.ends_with("/cancel")
            || path.ends_with("/redeem")
            || path.ends_with("/cancel-redemption")
            || path.contains("/points/"))
}
