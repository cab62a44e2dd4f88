//! `RecordQuery`: what a caller asks for, its validation, and the one backend-neutral filter
//! ([`RecordFilter`]) every backend applies, so that all backends agree on every edge case.

use crate::error::{Result, VaultError};
use crate::record::Record;
use crate::sorting;
use std::cmp::Ordering;

/// Columns a query can order by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderBy {
    CreatedAt,
    UpdatedAt,
    ExpiresAt,
    Token,
    Id,
}

impl OrderBy {
    /// Every order a listing offers.
    pub const ALL: [OrderBy; 5] = [
        OrderBy::CreatedAt,
        OrderBy::UpdatedAt,
        OrderBy::ExpiresAt,
        OrderBy::Token,
        OrderBy::Id,
    ];

    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "created_at" => OrderBy::CreatedAt,
            "updated_at" => OrderBy::UpdatedAt,
            "expires_at" => OrderBy::ExpiresAt,
            "token" => OrderBy::Token,
            "id" => OrderBy::Id,
            _ => {
                return Err(VaultError::invalid(
                    "orderBy must be one of created_at, updated_at, expires_at, token, id",
                ));
            }
        })
    }
}

/// Which soft-deleted records a query sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftDeleted {
    Exclude,
    Include,
    Only,
}

/// A query as the caller built it. Nothing is checked until [`RecordQuery::validate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordQuery {
    pub id: Option<String>,
    pub id_in: Option<Vec<String>>,
    pub token: Option<String>,
    pub token_in: Option<Vec<String>>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    pub order_by: Option<String>,
    pub sort_order: Option<String>,
    pub soft_deleted_include: bool,
    pub soft_deleted_only: bool,
    pub expired_only: bool,
    pub count_only: bool,
}

impl RecordQuery {
    /// Check every field and produce the filter backends apply. Errors are `INVALID_ARGUMENT`.
    pub fn validate(&self) -> Result<RecordFilter> {
        let limit = match self.limit {
            Some(n) if n < 0 => {
                return Err(VaultError::invalid("limit must be 0 or more"));
            }
            Some(0) | None => None,
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        };
        let offset = match self.offset {
            Some(n) if n < 0 => {
                return Err(VaultError::invalid("offset must be 0 or more"));
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => 0,
        };
        if self.count_only && (limit.is_some() || offset > 0) {
            return Err(VaultError::invalid(
                "countOnly cannot be combined with limit or offset; a count covers every matching record",
            ));
        }
        for (name, value) in [("id", &self.id), ("token", &self.token)] {
            if value.as_deref() == Some("") {
                return Err(VaultError::invalid(format!(
                    "{name} must be a non-empty string"
                )));
            }
        }
        let order_by = match &self.order_by {
            Some(name) => OrderBy::parse(name)?,
            None => OrderBy::CreatedAt,
        };
        // API.md: the default direction is descending, with or without orderBy.
        let descending = match self.sort_order.as_deref() {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(_) => {
                return Err(VaultError::invalid("sortOrder must be \"asc\" or \"desc\""));
            }
        };
        let soft_deleted = if self.soft_deleted_only {
            SoftDeleted::Only
        } else if self.soft_deleted_include {
            SoftDeleted::Include
        } else {
            SoftDeleted::Exclude
        };
        Ok(RecordFilter {
            id: self.id.clone(),
            id_in: self.id_in.clone(),
            token: self.token.clone(),
            token_in: self.token_in.clone(),
            soft_deleted,
            expired_only: self.expired_only,
            order_by,
            descending,
            limit,
            offset,
            count_only: self.count_only,
        })
    }
}

/// A validated query. Backends may use `id`/`token` fields to pick candidates through an index,
/// but must then keep exactly the records [`RecordFilter::matches`] accepts, in the order of
/// [`RecordFilter::compare`], paged by [`RecordFilter::page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFilter {
    pub id: Option<String>,
    pub id_in: Option<Vec<String>>,
    pub token: Option<String>,
    pub token_in: Option<Vec<String>>,
    pub soft_deleted: SoftDeleted,
    pub expired_only: bool,
    pub order_by: OrderBy,
    pub descending: bool,
    pub limit: Option<usize>,
    pub offset: usize,
    pub count_only: bool,
}

impl Default for RecordFilter {
    fn default() -> Self {
        RecordFilter {
            id: None,
            id_in: None,
            token: None,
            token_in: None,
            soft_deleted: SoftDeleted::Exclude,
            expired_only: false,
            order_by: OrderBy::CreatedAt,
            descending: true,
            limit: None,
            offset: 0,
            count_only: false,
        }
    }
}

impl RecordFilter {
    /// Expired records, `limit` at a time, soonest-expired first (purges). Ordered by expiry so
    /// that backends with an expiry index visit only expired records.
    pub fn expired(soft_deleted: SoftDeleted, limit: usize) -> Self {
        RecordFilter {
            soft_deleted,
            expired_only: true,
            order_by: OrderBy::ExpiresAt,
            descending: false,
            limit: Some(limit),
            ..Self::default()
        }
    }

    /// Whether `record` belongs in the result at time `now`.
    pub fn matches(&self, record: &Record, now: i64) -> bool {
        let listed = |one: &Option<String>, many: &Option<Vec<String>>, value: &str| {
            one.as_ref().is_none_or(|v| v == value)
                && many.as_ref().is_none_or(|vs| vs.iter().any(|v| v == value))
        };
        let deleted_ok = match self.soft_deleted {
            SoftDeleted::Exclude => !record.is_soft_deleted(),
            SoftDeleted::Include => true,
            SoftDeleted::Only => record.is_soft_deleted(),
        };
        deleted_ok
            && (!self.expired_only || record.is_expired(now))
            && listed(&self.id, &self.id_in, &record.id)
            && listed(&self.token, &self.token_in, &record.token)
    }

    /// The query's order: the chosen column, ties broken on id, both in the chosen direction.
    pub fn compare(&self, a: &Record, b: &Record) -> Ordering {
        let primary = match self.order_by {
            OrderBy::CreatedAt => a.created_at.cmp(&b.created_at),
            OrderBy::UpdatedAt => a.updated_at.cmp(&b.updated_at),
            // No expiry sorts as +infinity.
            OrderBy::ExpiresAt => a
                .expires_at
                .unwrap_or(i64::MAX)
                .cmp(&b.expires_at.unwrap_or(i64::MAX)),
            OrderBy::Token => js_string_cmp(&a.token, &b.token),
            OrderBy::Id => Ordering::Equal,
        };
        let ordering = primary.then_with(|| js_string_cmp(&a.id, &b.id));
        if self.descending {
            ordering.reverse()
        } else {
            ordering
        }
    }

    /// Filter, sort and page a set of candidate records.
    pub fn apply(&self, candidates: impl IntoIterator<Item = Record>, now: i64) -> Vec<Record> {
        let mut records: Vec<Record> = candidates
            .into_iter()
            .filter(|r| self.matches(r, now))
            .collect();
        sorting::sort_by(&mut records, |a, b| self.compare(a, b));
        self.page(records)
    }

    /// Apply offset and limit to records already in order.
    pub fn page(&self, records: Vec<Record>) -> Vec<Record> {
        let end = self
            .limit
            .map_or(usize::MAX, |l| self.offset.saturating_add(l));
        records.into_iter().take(end).skip(self.offset).collect()
    }

    /// True when the filter names the records it wants (by id or token) rather than scanning:
    /// when [`Self::candidate_tokens`] or [`Self::candidate_ids`] is `Some`, without building
    /// either list.
    pub fn names_records(&self) -> bool {
        self.token.is_some() || self.token_in.is_some() || self.id.is_some() || self.id_in.is_some()
    }

    /// The tokens the filter names, sorted and deduplicated (`None`: it names none).
    pub fn candidate_tokens(&self) -> Option<Vec<String>> {
        candidates(&self.token, &self.token_in)
    }

    pub fn candidate_ids(&self) -> Option<Vec<String>> {
        candidates(&self.id, &self.id_in)
    }
}

fn candidates(one: &Option<String>, many: &Option<Vec<String>>) -> Option<Vec<String>> {
    match (one, many) {
        (Some(v), _) => Some(vec![v.clone()]),
        (None, Some(vs)) => {
            let mut vs = vs.clone();
            sorting::sort(&mut vs);
            vs.dedup();
            Some(vs)
        }
        (None, None) => None,
    }
}

/// Compare as JavaScript does: by UTF-16 code units, with no locale collation.
pub fn js_string_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        return a.cmp(b);
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(
        id: &str,
        token: &str,
        created: i64,
        expires: Option<i64>,
        deleted: Option<i64>,
    ) -> Record {
        Record {
            id: id.into(),
            token: token.into(),
            value: String::new(),
            created_at: created,
            updated_at: created,
            expires_at: expires,
            soft_deleted_at: deleted,
            password_id: None,
            revs: Default::default(),
        }
    }

    #[test]
    fn validation_rejects_every_bad_field() {
        let bad = [
            RecordQuery {
                limit: Some(-1),
                ..Default::default()
            },
            RecordQuery {
                offset: Some(-1),
                ..Default::default()
            },
            RecordQuery {
                order_by: Some("value".into()),
                ..Default::default()
            },
            RecordQuery {
                sort_order: Some("up".into()),
                ..Default::default()
            },
            RecordQuery {
                count_only: true,
                limit: Some(5),
                ..Default::default()
            },
            RecordQuery {
                count_only: true,
                offset: Some(1),
                ..Default::default()
            },
            RecordQuery {
                token: Some(String::new()),
                ..Default::default()
            },
            RecordQuery {
                id: Some(String::new()),
                ..Default::default()
            },
        ];
        for q in bad {
            assert_eq!(
                q.validate().unwrap_err().code().as_str(),
                "INVALID_ARGUMENT",
                "{q:?}"
            );
        }
        let ok = RecordQuery {
            count_only: true,
            limit: Some(0),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn defaults_are_created_at_descending_without_soft_deleted() {
        let f = RecordQuery::default().validate().unwrap();
        assert_eq!(
            (f.order_by, f.descending, f.soft_deleted),
            (OrderBy::CreatedAt, true, SoftDeleted::Exclude)
        );
        let f = RecordQuery {
            order_by: Some("token".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert!(f.descending, "orderBy alone sorts descending");
        let f = RecordQuery {
            sort_order: Some("asc".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!((f.order_by, f.descending), (OrderBy::CreatedAt, false));
    }

    #[test]
    fn ties_break_on_id_in_the_same_direction_and_no_expiry_is_last() {
        let records = vec![
            rec("b", "tk_2", 5, None, None),
            rec("a", "tk_1", 5, Some(10), None),
            rec("c", "tk_3", 1, Some(20), None),
        ];
        let desc = RecordFilter::default().apply(records.clone(), 0);
        assert_eq!(
            desc.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["b", "a", "c"]
        );
        let by_expiry = RecordFilter {
            order_by: OrderBy::ExpiresAt,
            descending: false,
            ..Default::default()
        };
        let asc = by_expiry.apply(records, 0);
        assert_eq!(
            asc.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["a", "c", "b"]
        );
    }

    #[test]
    fn strings_sort_by_utf16_code_units() {
        // U+FF5E sorts after U+1F600 in UTF-16 (0xFF5E > 0xD83D) but before it in UTF-8.
        assert_eq!(js_string_cmp("\u{ff5e}", "\u{1f600}"), Ordering::Greater);
        assert_eq!("\u{ff5e}".cmp("\u{1f600}"), Ordering::Less);
    }

    #[test]
    fn soft_deleted_and_expired_filters() {
        let now = 100;
        let records = vec![
            rec("1", "tk_a", 1, Some(50), None),
            rec("2", "tk_b", 2, None, Some(60)),
            rec("3", "tk_c", 3, Some(100), None), // expires at now: not yet expired
            rec("4", "tk_d", 4, Some(10), Some(20)),
        ];
        let ids = |f: RecordFilter| {
            f.apply(records.clone(), now)
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(RecordFilter::default()), ["3", "1"]);
        assert_eq!(
            ids(RecordFilter {
                soft_deleted: SoftDeleted::Only,
                ..Default::default()
            }),
            ["4", "2"]
        );
        assert_eq!(
            ids(RecordFilter {
                expired_only: true,
                ..Default::default()
            }),
            ["1"]
        );
        assert_eq!(
            ids(RecordFilter::expired(SoftDeleted::Include, 10)),
            ["4", "1"],
            "purges take the soonest-expired first"
        );
        let empty_in = RecordFilter {
            token_in: Some(vec![]),
            ..Default::default()
        };
        assert!(ids(empty_in).is_empty(), "an empty tokenIn matches nothing");
    }

    #[test]
    fn paging() {
        let records: Vec<Record> = (0..10)
            .map(|i| rec(&format!("{i}"), "t", i, None, None))
            .collect();
        let f = RecordFilter {
            limit: Some(3),
            offset: 2,
            descending: false,
            ..Default::default()
        };
        assert_eq!(
            f.apply(records.clone(), 0)
                .iter()
                .map(|r| r.created_at)
                .collect::<Vec<_>>(),
            [2, 3, 4]
        );
        let f = RecordFilter {
            limit: None,
            offset: 8,
            descending: false,
            ..Default::default()
        };
        assert_eq!(f.apply(records, 0).len(), 2);
    }
}
