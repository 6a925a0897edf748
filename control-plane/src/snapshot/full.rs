//! A full snapshot: the whole configuration at one version, encoded once.

use super::rows;
use crate::error::Result;
use crate::store::Store;
use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt;
use prost::Message;
use shared::crypto::Cipher;
use shared::proto;
use shared::time::now_ms;

/// `Snapshot.keys`'s field number: keys are appended to the encoded message
/// one by one (concatenated protobuf messages merge, and repeated fields
/// concatenate), so a million keys never sit in memory decoded.
const KEYS_FIELD: u32 = 4;

/// An encoded snapshot, shared by every stream that sends it.
#[derive(Debug)]
pub struct EncodedSnapshot {
    pub version: i64,
    pub bytes: Bytes,
    pub keys: usize,
}

pub async fn build(store: &Store, cipher: &Cipher) -> Result<EncodedSnapshot> {
    let mut reader = store.config_reader().await?;
    let version = reader.version().await?.version;
    let providers = reader
        .providers()
        .await?
        .into_iter()
        .map(|p| rows::provider(p, cipher))
        .collect::<Result<Vec<_>>>()?;
    let settings = reader.settings().await?.to_proto();
    let head = proto::Snapshot {
        version,
        providers,
        routes: reader
            .routes()
            .await?
            .into_iter()
            .map(proto::Route::from)
            .collect(),
        keys: Vec::new(),
        created_at_ms: now_ms(),
        jwt_issuers: reader
            .jwt_issuers()
            .await?
            .iter()
            .map(rows::issuer)
            .collect(),
        users: reader
            .all_users()
            .await?
            .into_iter()
            .map(rows::user)
            .collect(),
        teams: reader
            .all_teams()
            .await?
            .into_iter()
            .map(rows::team)
            .collect(),
        prices: reader
            .prices()
            .await?
            .into_iter()
            .map(rows::price)
            .collect(),
        global_limits: settings.global_limits,
        cache_purges: settings.cache_purges,
        spend: Vec::new(),
    };
    let mut bytes = BytesMut::with_capacity(head.encoded_len() + 4096);
    head.encode(&mut bytes)
        .map_err(|e| crate::error::Error::Internal(format!("snapshot encoding: {e}")))?;
    let now = now_ms();
    let mut keys = 0;
    let mut stream = reader.all_keys();
    while let Some(row) = stream.try_next().await? {
        for key in rows::keys(row, now) {
            prost::encoding::message::encode(KEYS_FIELD, &key, &mut bytes);
            keys += 1;
        }
    }
    Ok(EncodedSnapshot {
        version,
        bytes: bytes.freeze(),
        keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_keys_decode_as_the_snapshots_keys() {
        let head = proto::Snapshot {
            version: 3,
            keys: vec![proto::SnapshotKey {
                id: "a".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut bytes = BytesMut::new();
        head.encode(&mut bytes).expect("encodes");
        for id in ["b", "c"] {
            let key = proto::SnapshotKey {
                id: id.into(),
                ..Default::default()
            };
            prost::encoding::message::encode(KEYS_FIELD, &key, &mut bytes);
        }
        let decoded = proto::Snapshot::decode(bytes.freeze()).expect("decodes");
        assert_eq!(decoded.version, 3);
        let ids: Vec<&str> = decoded.keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }
}
