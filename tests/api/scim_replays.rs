//! Replays of the request sequences Microsoft documents for Entra ID and Okta documents for
//! its SCIM client (`conformance/scim/replays/*.json`), against the live server on both
//! backends. Each step's status, headers and a JSON subset of the body are asserted;
//! `${name}` in paths, bodies and expectations is a value captured by an earlier step.
use crate::helpers::TestApp;
use crate::on_both_backends;
use lintel::identity::orgs;
use lintel::scim::clients;
use serde_json::Value;
use std::collections::HashMap;

on_both_backends!(entra_id_sequence, okta_sequence);

async fn entra_id_sequence(app: TestApp) {
    replay(&app, "entra").await;
    app.finish().await;
}

async fn okta_sequence(app: TestApp) {
    replay(&app, "okta").await;
    app.finish().await;
}

fn substitute(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

fn substitute_json(v: &Value, vars: &HashMap<String, String>) -> Value {
    match v {
        Value::String(s) => Value::String(substitute(s, vars)),
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute_json(x, vars)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), substitute_json(x, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `expected` is contained in `actual`: objects by key, arrays element-wise with equal
/// length, strings and other scalars equal.
fn contains(actual: &Value, expected: &Value, at: &str) -> Result<(), String> {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (k, ev) in e {
                let av = a.get(k).ok_or_else(|| format!("{at}/{k}: missing"))?;
                contains(av, ev, &format!("{at}/{k}"))?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(e)) => {
            if a.len() != e.len() {
                return Err(format!("{at}: {} elements, expected {}", a.len(), e.len()));
            }
            for (i, (av, ev)) in a.iter().zip(e).enumerate() {
                contains(av, ev, &format!("{at}/{i}"))?;
            }
            Ok(())
        }
        (a, e) if a == e => Ok(()),
        (a, e) => Err(format!("{at}: got {a}, expected {e}")),
    }
}

async fn replay(app: &TestApp, name: &str) {
    let path = format!(
        "{}/conformance/scim/replays/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let script: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let id = &app.state.identity;
    let org = orgs::create(id, &format!("{name} replay"), None)
        .await
        .unwrap();
    let (_, _, token) = clients::create(id, org.org_id, Some(name.into()))
        .await
        .unwrap();
    let token = token.expose().clone();
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("base".into(), lintel::scim::base_url(&app.state.config));
    let steps = script["steps"].as_array().unwrap();
    assert!(steps.len() >= 10, "{name}: a real sequence");
    for step in steps {
        let title = step["name"].as_str().unwrap();
        let method: reqwest::Method = step["method"].as_str().unwrap().parse().unwrap();
        let url = app.url(&format!(
            "/scim/v2{}",
            substitute(step["path"].as_str().unwrap(), &vars)
        ));
        let mut req = app.client.request(method, url).bearer_auth(&token);
        if let Some(body) = step.get("body") {
            req = req
                .header("content-type", "application/scim+json")
                .body(substitute_json(body, &vars).to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{name} / {title}: not JSON ({e}): {text}"))
        };
        let expect = &step["expect"];
        assert_eq!(
            status,
            expect["status"].as_u64().unwrap() as u16,
            "{name} / {title}: {body}"
        );
        if status != 204 {
            assert!(
                headers["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("application/scim+json"),
                "{name} / {title}"
            );
        }
        if let Some(cap) = step.get("capture").and_then(Value::as_object) {
            for (var, pointer) in cap {
                let v = body
                    .pointer(pointer.as_str().unwrap())
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("{name} / {title}: nothing at {pointer}"));
                vars.insert(var.clone(), v.to_string());
            }
        }
        if let Some(e) = expect.get("body") {
            let e = substitute_json(e, &vars);
            if let Err(why) = contains(&body, &e, "") {
                panic!("{name} / {title}: {why}\n{body}");
            }
        }
        for absent in expect
            .get("absent")
            .or_else(|| step.get("absent"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let p = absent.as_str().unwrap();
            assert!(
                body.pointer(p).is_none(),
                "{name} / {title}: {p} must be absent: {body}"
            );
        }
        if let Some(h) = expect.get("headers").and_then(Value::as_object) {
            for (k, v) in h {
                let want = substitute(v.as_str().unwrap(), &vars);
                assert_eq!(
                    headers[k.as_str()].to_str().unwrap(),
                    want,
                    "{name} / {title}: header {k}"
                );
            }
        }
    }
}
