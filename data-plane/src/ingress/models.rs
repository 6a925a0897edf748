//! `GET /v1/models`: the routes the calling key may use.

use super::AppState;
use crate::auth;
use crate::error::GatewayError;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "switchboard"})
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, GatewayError> {
    let runtime = state.live.load_full().ok_or(GatewayError::NotReady)?;
    let key = auth::authenticate(&runtime, &headers)?;
    let data: Vec<Value> = runtime
        .models_for(&key)
        .into_iter()
        .map(model_object)
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

pub async fn get(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, GatewayError> {
    let runtime = state.live.load_full().ok_or(GatewayError::NotReady)?;
    let key = auth::authenticate(&runtime, &headers)?;
    if runtime.route(&model).is_none() {
        return Err(GatewayError::ModelNotFound(model));
    }
    if !key.allows(&model) {
        return Err(GatewayError::ModelNotAllowed(model));
    }
    Ok(Json(model_object(&model)))
}
