//! `GET /v1/models`: the routes the calling key may use, in OpenAI's list
//! format, or Anthropic's when the caller is an Anthropic client (it sends
//! `anthropic-version`).

use super::AppState;
use crate::auth;
use crate::error::GatewayError;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

fn is_anthropic(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}

fn model_object(id: &str, anthropic: bool) -> Value {
    if anthropic {
        json!({"type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"})
    } else {
        json!({"id": id, "object": "model", "created": 0, "owned_by": "switchboard"})
    }
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, GatewayError> {
    let runtime = state.live.load_full().ok_or(GatewayError::NotReady)?;
    let caller = auth::authenticate(runtime.directory(), &headers)?;
    let anthropic = is_anthropic(&headers);
    let models = runtime.models_for(&caller);
    let data: Vec<Value> = models.iter().map(|m| model_object(m, anthropic)).collect();
    Ok(Json(if anthropic {
        json!({"data": data, "has_more": false, "first_id": models.first(), "last_id": models.last()})
    } else {
        json!({"object": "list", "data": data})
    }))
}

pub async fn get(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, GatewayError> {
    let runtime = state.live.load_full().ok_or(GatewayError::NotReady)?;
    let caller = auth::authenticate(runtime.directory(), &headers)?;
    super::check_model_name(&model)?;
    if runtime.routes().route(&model).is_none() {
        return Err(GatewayError::ModelNotFound(model));
    }
    if !caller.allows(&model) {
        return Err(GatewayError::ModelNotAllowed(model));
    }
    Ok(Json(model_object(&model, is_anthropic(&headers))))
}
