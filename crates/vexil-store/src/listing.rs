//! What the backends' read paths share apart from the queries themselves: the page-size rule of
//! [`FlagQuery`] and [`AuditQuery`](crate::AuditQuery), the text filter (its needle, the search
//! text the SQL backends store and match, and the same match in memory for etcd), cutting a
//! page and its cursor, and taking whole commits for [`ChangeFeed::changes_since`].
//!
//! [`ChangeFeed::changes_since`]: crate::ChangeFeed::changes_since

use vexil_core::domain::Flag;

use crate::{FlagQuery, StoreError};

/// The page size of a listing asked for 0.
const DEFAULT_LIMIT: usize = 100;

/// The largest page a listing returns.
const MAX_LIMIT: usize = 1000;

/// The traits' page-size rule: 0 means the default (100), anything above the cap (1000) is
/// capped.
pub(crate) fn page_limit(requested: usize) -> usize {
    match requested {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    }
}

/// The text filter's needle, lower-cased (by Rust, like [`search_text`], so the match is
/// Unicode-case-insensitive); `None` when there is no filter.
pub(crate) fn needle(query: &FlagQuery) -> Option<String> {
    query
        .text
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
}

/// What the text filter searches in a flag, as the SQL backends store it: key, name and
/// description, lower-cased, with U+001F (unit separator) between them so that a search cannot
/// match across two of them.
pub(crate) fn search_text(flag: &Flag) -> String {
    format!("{}\u{1f}{}\u{1f}{}", flag.key, flag.name, flag.description).to_lowercase()
}

/// Whether `flag` passes the tag and text filters of a query whose needle is `needle` (see
/// [`needle`]), in memory: the match the SQL backends run on the stored tags and
/// [`search_text`], field by field (the same for any needle without U+001F).
pub(crate) fn matches(flag: &Flag, query: &FlagQuery, needle: Option<&str>) -> bool {
    query.tag.as_ref().is_none_or(|tag| flag.tags.contains(tag))
        && needle.is_none_or(|needle| {
            [&flag.key, &flag.name, &flag.description]
                .iter()
                .any(|field| field.to_lowercase().contains(needle))
        })
}

/// Cuts a page from up to `limit + 1` items in key order (one more than the page, to know
/// whether another page follows): the first `limit`, and the cursor to pass back for the next
/// page (the last key on this one), `None` on the last page.
pub(crate) fn split_page<T>(
    mut items: Vec<T>,
    limit: usize,
    key: impl Fn(&T) -> &str,
) -> (Vec<T>, Option<String>) {
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = if more {
        items.last().map(|item| key(item).to_owned())
    } else {
        None
    };
    (items, next_cursor)
}

/// Takes commits for one call of `changes_since`, given each commit and its number of changes
/// in revision order: whole commits only, up to `limit` changes, except that a single commit
/// larger than `limit` is taken alone and whole (splitting it would break the contract, and
/// returning nothing would stall the consumer). Stops reading `commits` as soon as it has
/// enough.
///
/// # Errors
/// The first error `commits` yields before then.
pub(crate) fn whole_commits<T>(
    commits: impl IntoIterator<Item = Result<(T, usize), StoreError>>,
    limit: usize,
) -> Result<Vec<T>, StoreError> {
    let mut taken = 0usize;
    let mut out = Vec::new();
    for commit in commits {
        if !out.is_empty() && taken >= limit {
            break;
        }
        let (commit, count) = commit?;
        if !out.is_empty() && taken.saturating_add(count) > limit {
            break;
        }
        taken = taken.saturating_add(count);
        out.push(commit);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commits(counts: &[usize]) -> Vec<Result<(usize, usize), StoreError>> {
        counts.iter().copied().enumerate().map(Ok).collect()
    }

    #[test]
    fn whole_commits_fill_the_limit_and_an_oversized_one_comes_alone() {
        let taken = |counts: &[usize], limit| whole_commits(commits(counts), limit);
        assert_eq!(taken(&[2, 2, 2], 5), Ok(vec![0, 1]));
        assert_eq!(taken(&[2, 3, 1], 5), Ok(vec![0, 1]));
        assert_eq!(taken(&[7, 1], 5), Ok(vec![0]));
        assert_eq!(taken(&[], 5), Ok(vec![]));
    }

    #[test]
    fn a_page_has_a_cursor_only_when_more_follow() {
        let rows = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!(
            split_page(rows(3), 2, String::as_str),
            (rows(2), Some("1".into()))
        );
        assert_eq!(split_page(rows(2), 2, String::as_str), (rows(2), None));
        assert_eq!(
            (page_limit(0), page_limit(5), page_limit(5000)),
            (100, 5, 1000)
        );
    }
}
