//! The order in which glibc's resolver tries a name's candidates, and when it stops:
//! `__res_context_search` in glibc's resolv/res_query.c (the same since glibc 2.26;
//! older releases differ only in capping the search list at six domains).
//!
//! What glibc does, as implemented here:
//! - A name with at least `ndots` dots, or with a trailing dot, is tried as-is first.
//!   A trailing dot makes it absolute: that one query decides.
//! - Otherwise, and after an as-is try that did not answer, each search domain is
//!   appended in order. NXDOMAIN and NODATA move on to the next domain; so does a
//!   SERVFAIL. Any other failure (a timeout, REFUSED, a name too long) stops the
//!   walk; a server no try could reach ends the lookup at once.
//! - Unless it was already tried as-is (or the list holds the root), the name is
//!   then tried as-is last, except a single-label name under `no-tld-query`.
//! - The lookup fails with the as-is try's error if that came first, else NODATA if
//!   any candidate had no data, else SERVFAIL if any failed so, else the last error.
//!
//! A candidate counts as answered when either of its A and AAAA replies is NOERROR
//! with a non-empty answer section (res_query.c `__res_context_query`).

use serde::Serialize;

/// How one candidate's exchange ended, as res_search sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Verdict {
    Answered,
    NxDomain,
    NoData,
    ServFail,
    /// REFUSED, NOTIMP, FORMERR or an unknown rcode (glibc's NO_RECOVERY).
    Refused,
    Timeout,
    /// No try reached the server: ECONNREFUSED (an ICMP port unreachable, nothing
    /// listening) or the network unreachable. glibc gives up the whole lookup.
    Unreachable,
    /// The query could not be built or sent.
    Error(String),
    /// The probe's deadline came first; not something the pod would see.
    Unfinished,
}

/// The candidates of `name` in the order glibc would try them if each one returned
/// NXDOMAIN. A domain with a leading dot has it removed; an empty one is the root.
pub fn candidates(
    name: &str,
    search_list: &[String],
    ndots: u8,
    no_tld_query: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    search(name, search_list, ndots, no_tld_query, |fqdn| {
        out.push(fqdn.to_string());
        Verdict::NxDomain
    });
    out
}

/// Runs glibc's search over `name`: `query` is called for each candidate in turn
/// and its verdict decides whether to go on. Returns the candidate that answered
/// (if one did) and the verdict the lookup ends with.
pub fn search(
    name: &str,
    search: &[String],
    ndots: u8,
    no_tld_query: bool,
    mut query: impl FnMut(&str) -> Verdict,
) -> (Option<String>, Verdict) {
    let dots = name.matches('.').count();
    let trailing_dot = name.ends_with('.');
    let mut saved: Option<Verdict> = None;
    let mut tried_as_is = false;
    let mut got_nodata = false;
    let mut got_servfail = false;
    let mut root_on_list = false;
    let mut searched = false;
    let mut last = Verdict::NxDomain;

    if dots >= usize::from(ndots) || trailing_dot {
        let v = query(name);
        if v == Verdict::Answered {
            return (Some(name.to_string()), v);
        }
        if trailing_dot || v == Verdict::Unfinished {
            return (None, v);
        }
        saved = Some(v);
        tried_as_is = true;
    }

    for domain in search {
        searched = true;
        let d = domain.strip_prefix('.').unwrap_or(domain);
        let fqdn = if d.is_empty() {
            root_on_list = true;
            format!("{name}.")
        } else {
            format!("{name}.{d}")
        };
        let v = query(&fqdn);
        match v {
            Verdict::Answered => return (Some(fqdn), v),
            Verdict::Unreachable | Verdict::Unfinished => return (None, v),
            Verdict::NoData => got_nodata = true,
            Verdict::NxDomain => {}
            Verdict::ServFail => got_servfail = true,
            Verdict::Refused | Verdict::Timeout | Verdict::Error(_) => {
                last = v;
                break;
            }
        }
        last = v;
    }

    let single_label_kept_local = dots == 0 && searched && no_tld_query;
    if !(tried_as_is || root_on_list || single_label_kept_local) {
        let v = query(name);
        if v == Verdict::Answered {
            return (Some(name.to_string()), v);
        }
        last = v;
    }

    let verdict = if let Some(v) = saved {
        v
    } else if last == Verdict::Unfinished {
        last
    } else if got_nodata {
        Verdict::NoData
    } else if got_servfail {
        Verdict::ServFail
    } else {
        last
    };
    (None, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k8s_search() -> Vec<String> {
        [
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ]
        .map(String::from)
        .to_vec()
    }

    /// Runs `search` against a table of verdicts (NXDOMAIN for anything not listed)
    /// and returns the candidates asked, in order, with the result.
    fn run(
        name: &str,
        search_list: &[String],
        ndots: u8,
        table: &[(&str, Verdict)],
    ) -> (Vec<String>, Option<String>, Verdict) {
        let mut asked = Vec::new();
        let (hit, v) = search(name, search_list, ndots, false, |fqdn| {
            asked.push(fqdn.to_string());
            table
                .iter()
                .find(|(n, _)| *n == fqdn)
                .map_or(Verdict::NxDomain, |(_, v)| v.clone())
        });
        (asked, hit, v)
    }

    #[test]
    fn ndots_5_walks_the_whole_search_list_before_the_name_itself() {
        let name = "kubernetes.default.svc.cluster.local";
        let expected = [
            "kubernetes.default.svc.cluster.local.default.svc.cluster.local",
            "kubernetes.default.svc.cluster.local.svc.cluster.local",
            "kubernetes.default.svc.cluster.local.cluster.local",
            "kubernetes.default.svc.cluster.local",
        ];
        assert_eq!(candidates(name, &k8s_search(), 5, false), expected);
        let (asked, hit, v) = run(name, &k8s_search(), 5, &[(name, Verdict::Answered)]);
        assert_eq!(asked, expected);
        assert_eq!((hit.as_deref(), v), (Some(name), Verdict::Answered));
    }

    #[test]
    fn a_short_name_stops_at_the_first_domain_that_answers() {
        let (asked, hit, _) = run(
            "kubernetes",
            &k8s_search(),
            5,
            &[("kubernetes.default.svc.cluster.local", Verdict::Answered)],
        );
        assert_eq!(asked, ["kubernetes.default.svc.cluster.local"]);
        assert_eq!(hit.as_deref(), Some("kubernetes.default.svc.cluster.local"));
    }

    #[test]
    fn enough_dots_try_the_name_first_and_trailing_dots_only_that() {
        let name = "api.example.com";
        assert_eq!(
            candidates(name, &k8s_search(), 1, false),
            [
                "api.example.com",
                "api.example.com.default.svc.cluster.local",
                "api.example.com.svc.cluster.local",
                "api.example.com.cluster.local",
            ]
        );
        assert_eq!(
            candidates("api.example.com.", &k8s_search(), 5, false),
            ["api.example.com."]
        );
        let (asked, hit, v) = run("gone.example.com.", &k8s_search(), 5, &[]);
        assert_eq!((asked.len(), hit, v), (1, None, Verdict::NxDomain));
    }

    #[test]
    fn nxdomain_everywhere_is_nxdomain_after_every_candidate() {
        let (asked, hit, v) = run("nope.invalid", &k8s_search(), 5, &[]);
        assert_eq!(asked.len(), 4);
        assert_eq!((hit, v), (None, Verdict::NxDomain));
    }

    #[test]
    fn nodata_and_servfail_move_on_and_are_remembered() {
        let s = k8s_search();
        let (asked, _, v) = run(
            "db",
            &s,
            5,
            &[("db.default.svc.cluster.local", Verdict::NoData)],
        );
        assert_eq!(asked.len(), 4);
        assert_eq!(v, Verdict::NoData);
        let (asked, _, v) = run("db", &s, 5, &[("db.svc.cluster.local", Verdict::ServFail)]);
        assert_eq!(asked.len(), 4);
        assert_eq!(v, Verdict::ServFail);
        let (_, hit, v) = run(
            "db",
            &s,
            5,
            &[
                ("db.default.svc.cluster.local", Verdict::ServFail),
                ("db.svc.cluster.local", Verdict::Answered),
            ],
        );
        assert_eq!(
            (hit.as_deref(), v),
            (Some("db.svc.cluster.local"), Verdict::Answered)
        );
    }

    #[test]
    fn a_timeout_stops_the_walk_but_the_name_is_still_tried_as_is() {
        let (asked, hit, v) = run(
            "kubernetes.default.svc.cluster.local",
            &k8s_search(),
            5,
            &[
                (
                    "kubernetes.default.svc.cluster.local.default.svc.cluster.local",
                    Verdict::Timeout,
                ),
                ("kubernetes.default.svc.cluster.local", Verdict::Timeout),
            ],
        );
        assert_eq!(
            asked,
            [
                "kubernetes.default.svc.cluster.local.default.svc.cluster.local",
                "kubernetes.default.svc.cluster.local"
            ]
        );
        assert_eq!((hit, v), (None, Verdict::Timeout));
        let (asked, _, v) = run(
            "x",
            &k8s_search(),
            5,
            &[("x.default.svc.cluster.local", Verdict::Refused)],
        );
        assert_eq!(asked, ["x.default.svc.cluster.local", "x"]);
        assert_eq!(v, Verdict::NxDomain, "the last try's verdict");
    }

    #[test]
    fn the_first_as_is_error_wins_over_later_ones() {
        let (asked, _, v) = run(
            "a.b.c",
            &k8s_search(),
            1,
            &[
                ("a.b.c", Verdict::ServFail),
                ("a.b.c.default.svc.cluster.local", Verdict::NoData),
            ],
        );
        assert_eq!(asked.len(), 4, "as-is, then every domain, not as-is again");
        assert_eq!(v, Verdict::ServFail);
    }

    #[test]
    fn an_unreachable_server_ends_the_lookup() {
        let (asked, _, v) = run(
            "svc",
            &k8s_search(),
            5,
            &[("svc.default.svc.cluster.local", Verdict::Unreachable)],
        );
        assert_eq!((asked.len(), v), (1, Verdict::Unreachable));
    }

    #[test]
    fn the_deadline_ends_the_lookup_wherever_it_is() {
        let (asked, _, v) = run(
            "svc",
            &k8s_search(),
            5,
            &[("svc.svc.cluster.local", Verdict::Unfinished)],
        );
        assert_eq!((asked.len(), v), (2, Verdict::Unfinished));
        let (asked, _, v) = run("a.b", &[], 1, &[("a.b", Verdict::Unfinished)]);
        assert_eq!((asked.len(), v), (1, Verdict::Unfinished));
    }

    #[test]
    fn root_in_the_search_list_and_no_tld_query() {
        let with_root = vec!["cluster.local".to_string(), ".".to_string()];
        assert_eq!(
            candidates("host", &with_root, 1, false),
            ["host.cluster.local", "host."],
            "the root stands for the name as-is"
        );
        assert_eq!(
            candidates("host", &k8s_search(), 1, true),
            [
                "host.default.svc.cluster.local",
                "host.svc.cluster.local",
                "host.cluster.local"
            ],
            "no-tld-query: a single label is never asked alone"
        );
        assert_eq!(
            candidates("host", &[], 1, true),
            ["host"],
            "unless nothing was searched"
        );
    }
}
