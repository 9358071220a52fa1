//! The column types the two dialects store differently, encoded per backend:
//! `inet` (PostgreSQL `inet`, SQLite text) and `text[]` (PostgreSQL array, SQLite JSON text).
use serde::{Deserialize, Serialize};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};
use std::net::IpAddr;

/// An IP address (`inet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Inet(pub IpAddr);

impl Type<Sqlite> for Inet {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Inet {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(self.0.to_string(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Inet {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Inet(<&str as Decode<Sqlite>>::decode(value)?.parse()?))
    }
}

impl Type<Postgres> for Inet {
    fn type_info() -> PgTypeInfo {
        <IpAddr as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <IpAddr as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Inet {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <IpAddr as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Inet {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Inet(<IpAddr as Decode<Postgres>>::decode(value)?))
    }
}

/// A list of strings (`text[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TextList(pub Vec<String>);

impl<S: Into<String>> FromIterator<S> for TextList {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        TextList(iter.into_iter().map(Into::into).collect())
    }
}

impl Type<Sqlite> for TextList {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for TextList {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(serde_json::to_string(&self.0)?, buf)
    }
}

impl<'r> Decode<'r, Sqlite> for TextList {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(TextList(serde_json::from_str(
            <&str as Decode<Sqlite>>::decode(value)?,
        )?))
    }
}

impl Type<Postgres> for TextList {
    fn type_info() -> PgTypeInfo {
        <Vec<String> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <Vec<String> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for TextList {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <Vec<String> as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for TextList {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(TextList(<Vec<String> as Decode<Postgres>>::decode(value)?))
    }
}

/// The stored form of a case-insensitively unique name (`*_key` columns): Unicode lower
/// case, computed here so SQLite and PostgreSQL agree (SQL `lower()` does not).
pub fn fold_key(s: &str) -> String {
    s.to_lowercase()
}
