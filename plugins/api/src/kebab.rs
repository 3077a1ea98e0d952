//! The `index` of a document is the kebab-case of its `kind`, as HFXEventStash
//! computed it with lodash's `kebabCase`: words are split at non-alphanumeric
//! characters, at lower-to-upper case changes, before the last capital of an
//! acronym (`HTTPServer` → `http-server`) and between letters and digits.

/// Kinds whose index a thread remembers; producers use a handful.
const CACHED_KINDS: usize = 64;
/// Longer kinds are not remembered: a cache must not hold megabytes.
const CACHED_KIND_BYTES: usize = 256;

/// A thread's remembered indexes, and the last kind it was asked for.
#[derive(Default)]
struct IndexCache {
    by_kind: std::collections::HashMap<String, String>,
    /// The last kind and its index: consecutive events mostly share a kind,
    /// and comparing is cheaper than hashing.
    last: Option<(String, String)>,
}

thread_local! {
    static INDEXES: std::cell::RefCell<IndexCache> = std::cell::RefCell::new(IndexCache::default());
}

/// [`kebab_case`] through a small per-thread cache: every event needs its
/// index, and a stream almost always repeats a few kinds.
pub(crate) fn kebab_case_cached(kind: &str) -> String {
    if kind.len() > CACHED_KIND_BYTES {
        return kebab_case(kind);
    }
    INDEXES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((last, index)) = &cache.last
            && last == kind
        {
            return index.clone();
        }
        let index = match cache.by_kind.get(kind) {
            Some(index) => index.clone(),
            None => {
                if cache.by_kind.len() >= CACHED_KINDS {
                    cache.by_kind.clear();
                }
                let index = kebab_case(kind);
                cache.by_kind.insert(kind.to_owned(), index.clone());
                index
            }
        };
        cache.last = Some((kind.to_owned(), index.clone()));
        index
    })
}

/// Returns the kebab-case of `kind`: `contact.AddressBook` → `contact-address-book`.
pub fn kebab_case(kind: &str) -> String {
    // Called for every event: ASCII kinds (nearly all) skip decoding chars.
    if kind.is_ascii() {
        return kebab_case_ascii(kind.as_bytes());
    }
    let chars: Vec<char> = kind.chars().collect();
    let mut out = String::with_capacity(kind.len() + 4);
    let mut previous: Option<char> = None;
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            previous = None;
            continue;
        }
        if let Some(p) = previous {
            let next_is_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let boundary = (p.is_lowercase() && c.is_uppercase())
                || (p.is_uppercase() && c.is_uppercase() && next_is_lower)
                || (p.is_numeric() != c.is_numeric());
            if boundary {
                out.push('-');
            }
        } else if !out.is_empty() {
            out.push('-');
        }
        out.extend(c.to_lowercase());
        previous = Some(c);
    }
    out
}

/// The same rules as [`kebab_case`], on ASCII bytes.
fn kebab_case_ascii(kind: &[u8]) -> String {
    let mut out = String::with_capacity(kind.len() + 4);
    let mut previous: Option<u8> = None;
    for (i, &c) in kind.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            previous = None;
            continue;
        }
        if let Some(p) = previous {
            let next_is_lower = kind.get(i + 1).is_some_and(u8::is_ascii_lowercase);
            let boundary = (p.is_ascii_lowercase() && c.is_ascii_uppercase())
                || (p.is_ascii_uppercase() && c.is_ascii_uppercase() && next_is_lower)
                || (p.is_ascii_digit() != c.is_ascii_digit());
            if boundary {
                out.push('-');
            }
        } else if !out.is_empty() {
            out.push('-');
        }
        out.push(char::from(c.to_ascii_lowercase()));
        previous = Some(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_agrees_with_the_rules_and_stays_bounded() {
        for round in 0..3 {
            for n in 0..(CACHED_KINDS * 2) {
                let kind = format!("pkg{n}.SomeHTTPKind{round}");
                assert_eq!(kebab_case_cached(&kind), kebab_case(&kind));
            }
            INDEXES.with(|cache| assert!(cache.borrow().by_kind.len() <= CACHED_KINDS));
        }
        let long = "A".repeat(CACHED_KIND_BYTES + 1);
        assert_eq!(kebab_case_cached(&long), kebab_case(&long));
    }

    #[test]
    fn splits_packages_and_camel_case() {
        assert_eq!(kebab_case("contact.AddressBook"), "contact-address-book");
        assert_eq!(kebab_case("event"), "event");
        assert_eq!(kebab_case("user_signed-up"), "user-signed-up");
    }

    #[test]
    fn splits_acronyms_and_digits_like_lodash() {
        assert_eq!(kebab_case("HTTPServer"), "http-server");
        assert_eq!(kebab_case("hfx.v1.StoreEvent"), "hfx-v-1-store-event");
        assert_eq!(kebab_case("__FOO_BAR__"), "foo-bar");
    }

    #[test]
    fn strips_path_characters_so_an_index_is_never_a_path() {
        assert_eq!(kebab_case("../../etc/passwd"), "etc-passwd");
        assert_eq!(kebab_case(""), "");
        assert_eq!(kebab_case("Ünïcode.Kind"), "ünïcode-kind");
    }

    #[test]
    fn ascii_and_unicode_paths_agree() {
        for kind in [
            "contact.AddressBook",
            "HTTPServer2Go",
            "a..b__C",
            "x9Y",
            "ABC",
            "aB.C1d",
        ] {
            // A leading non-ASCII word sends the same kind down the other path.
            let unicode = format!("é.{kind}");
            assert_eq!(format!("é-{}", kebab_case(kind)), kebab_case(&unicode), "{kind}");
        }
    }
}
