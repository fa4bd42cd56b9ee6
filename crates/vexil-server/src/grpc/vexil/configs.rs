//! `vexil.v1.ConfigService`: the twin of the REST routes under
//! `/api/v1/namespaces/{ns}/configs`. A request becomes the REST JSON body and goes to the same
//! [`vexil_service::ConfigService`] method, so both transports accept, refuse and audit alike.

use serde_json::{Map, Value};
use tonic::{Request, Response, Status};
use vexil_core::domain::ConfigEntry;
use vexil_proto::vexil::v1 as pb;
use vexil_service::Permission;

use super::{VexilApi, namespace, required, value_json};
use crate::grpc::convert::{from_json, status};
use crate::grpc::flagd::caller;

fn config_message(c: &ConfigEntry) -> pb::ConfigEntry {
    pb::ConfigEntry {
        namespace: c.namespace.clone(),
        key: c.key.clone(),
        value: Some(from_json(&c.value)),
        schema: c.schema.as_ref().map(from_json),
        description: c.description.clone(),
        version: c.version,
        created_at_ms: c.created_at,
        created_by: c.created_by.clone(),
        updated_at_ms: c.updated_at,
        updated_by: c.updated_by.clone(),
    }
}

fn list(configs: &[ConfigEntry]) -> pb::ListConfigsResponse {
    pb::ListConfigsResponse {
        configs: configs.iter().map(config_message).collect(),
    }
}

/// The REST body of a PUT: absent fields stay absent, so "keep the current one" means the same
/// on both transports.
fn put_body(r: &pb::PutConfigRequest) -> Result<Value, Status> {
    let mut body = Map::new();
    if let Some(v) = &r.value {
        body.insert("value".into(), value_json(v, "value")?);
    }
    if let Some(s) = &r.schema {
        body.insert("schema".into(), value_json(s, "schema")?);
    }
    if let Some(d) = &r.description {
        body.insert("description".into(), Value::String(d.clone()));
    }
    Ok(Value::Object(body))
}

#[tonic::async_trait]
impl pb::config_service_server::ConfigService for VexilApi {
    async fn list_configs(
        &self,
        req: Request<pb::ListConfigsRequest>,
    ) -> Result<Response<pb::ListConfigsResponse>, Status> {
        let ns = namespace(&req, &req.get_ref().namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::ConfigRead, &ns).map_err(status)?;
        let configs = self.0.configs.list(&pass, &ns).await.map_err(status)?;
        Ok(Response::new(list(&configs)))
    }

    async fn get_config(
        &self,
        req: Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::ConfigEntry>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::ConfigRead, &ns).map_err(status)?;
        let key = required(&r.key, "key")?;
        let c = self.0.configs.get(&pass, &ns, key).await.map_err(status)?;
        Ok(Response::new(config_message(&c)))
    }

    async fn put_config(
        &self,
        req: Request<pb::PutConfigRequest>,
    ) -> Result<Response<pb::PutConfigResponse>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::ConfigWrite, &ns).map_err(status)?;
        let key = required(&r.key, "key")?;
        let body = put_body(r)?;
        let w = self
            .0
            .configs
            .put(&pass, &ns, key, &body, r.expected_version)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::PutConfigResponse {
            config: Some(config_message(&w.entry)),
            created: w.created,
        }))
    }

    async fn delete_config(
        &self,
        req: Request<pb::DeleteConfigRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::ConfigWrite, &ns).map_err(status)?;
        let key = required(&r.key, "key")?;
        self.0
            .configs
            .delete(&pass, &ns, key, r.expected_version)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn list_config_versions(
        &self,
        req: Request<pb::ListConfigVersionsRequest>,
    ) -> Result<Response<pb::ListConfigsResponse>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::ConfigRead, &ns).map_err(status)?;
        let key = required(&r.key, "key")?;
        let versions = self
            .0
            .configs
            .versions(
                &pass,
                &ns,
                key,
                r.after_version,
                usize::try_from(r.limit).unwrap_or(usize::MAX),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(list(&versions)))
    }

    async fn rollback_config(
        &self,
        req: Request<pb::RollbackConfigRequest>,
    ) -> Result<Response<pb::ConfigEntry>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::ConfigWrite, &ns).map_err(status)?;
        let key = required(&r.key, "key")?;
        let body = serde_json::json!({ "version": r.version });
        let c = self
            .0
            .configs
            .rollback(&pass, &ns, key, &body, r.expected_version)
            .await
            .map_err(status)?;
        Ok(Response::new(config_message(&c)))
    }
}
