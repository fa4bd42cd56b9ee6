//! The flagd-testbed rows of the engine issue, again over HTTP: the flags are imported through
//! the API, the launchpad's static context is set on the namespace, and every row evaluates
//! through OFREP with an OFREP-shaped client (value absent → the caller's default).

use serde_json::{Value, json};
use vexil_testkit::testbed::{self, Fractional, Outcome, Request, Resolver};

use crate::fixtures::{Server, client_with_api_key};

/// Resolves through `POST /ofrep/v1/evaluate/flags/{key}` from a blocking context.
struct Ofrep {
    base: String,
    namespace: String,
    http: reqwest::Client,
    rt: tokio::runtime::Handle,
}

impl Resolver for Ofrep {
    fn resolve(&mut self, req: &Request) -> Result<Outcome, String> {
        let url = format!("{}/ofrep/v1/evaluate/flags/{}", self.base, req.key);
        let call = self
            .http
            .post(url)
            .header("x-vexil-namespace", &self.namespace)
            .json(&json!({"context": Value::Object(req.context.clone())}))
            .send();
        let (status, body) = tokio::task::block_in_place(|| {
            self.rt.block_on(async {
                let r = call.await.map_err(|e| e.to_string())?;
                let status = r.status().as_u16();
                let body: Value = r.json().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((status, body))
            })
        })?;
        let error_code = body["errorCode"].as_str().map(str::to_owned);
        if status != 200 && error_code.is_none() {
            return Err(format!("HTTP {status}: {body}"));
        }
        // OFREP has no typed request: the client checks the type, as the SDK providers do.
        let value = body.get("value").cloned();
        let type_ok = value.as_ref().is_none_or(|v| match req.flag_type {
            testbed::FlagType::Boolean => v.is_boolean(),
            testbed::FlagType::String => v.is_string(),
            testbed::FlagType::Integer => v.is_i64() || v.is_u64(),
            testbed::FlagType::Float => v.is_number(),
            testbed::FlagType::Object => v.is_object(),
        });
        Ok(if type_ok {
            Outcome {
                value,
                reason: body["reason"].as_str().unwrap_or("ERROR").to_owned(),
                error_code,
                metadata: body["metadata"].as_object().cloned().unwrap_or_default(),
            }
        } else {
            Outcome {
                value: None,
                reason: "ERROR".into(),
                error_code: Some("TYPE_MISMATCH".into()),
                metadata: Default::default(),
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_required_flagd_testbed_row_passes_over_ofrep() {
    let v2 = Server::start().await;
    let v3 = Server::start_with(|o| o.env("VEXIL_FRACTIONAL", "v3")).await;
    let mut out = String::new();
    let mut failed = 0;
    for (i, suite) in testbed::suites().into_iter().enumerate() {
        let server = if suite.fractional == Fractional::V3 {
            &v3
        } else {
            &v2
        };
        let ns = format!("suite{i}");
        let (status, body) = server
            .post("/api/v1/namespaces", &json!({"key": ns, "evaluationContext": Value::Object(suite.static_context.clone())}))
            .await;
        assert_eq!(status, 201, "{body}");
        let imported = server.import(&ns, &suite.flags).await;
        assert!(
            imported["diff"]["added"]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
            "{imported}"
        );
        let mut resolver = Ofrep {
            base: server.process.base.clone(),
            namespace: ns,
            // Evaluation as an SDK does it: an `evaluator` API token in `X-API-Key`.
            http: client_with_api_key(&server.api_token("evaluator", "*").await),
            rt: tokio::runtime::Handle::current(),
        };
        let report = testbed::run(&suite, &mut resolver);
        assert!(report.passed() > 0, "suite {} ran no rows", suite.name);
        out.push_str(&report.summary(suite.name));
        failed += report.failed();
    }
    println!("{out}");
    assert_eq!(failed, 0, "conformance over OFREP:\n{out}");
}
