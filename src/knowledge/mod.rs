//! The knowledge base: what content teams edit, and the checks that keep a bad edit
//! from reaching customers.
//!
//! A directory holds entry files (`*.toml`, `*.csv`, `*.tsv`), an optional jieba user
//! dictionary (`userdict.txt`) and optional synonym groups (`synonyms.txt`). Loading
//! collects every problem with file and line before it fails, so one `kefu kb check`
//! run shows an editor all there is to fix.

pub mod bundle;
pub mod content;
pub mod wording;
mod xlsx;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use time::Date;
use toml::Spanned;

use crate::error::{ContentErrors, ContentIssue, Error, Location, Result};
use crate::knowledge::content::{read_text, toml_issue, LineIndex};
use crate::text::{search_form, DictWord, Synonyms};

/// Which customers an entry is for: a head-office entry serves everyone, a branch entry
/// only that branch's customers (and beats a head-office entry for them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Branch(String),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub category: String,
    pub question: String,
    pub similar: Vec<String>,
    pub answer: String,
    pub related: Vec<String>,
    pub keywords: Vec<String>,
    /// Negative questions: phrasings this entry must *not* answer although they look
    /// like it (a known near miss, e.g. "信用卡年费" for a debit-card fee entry). A
    /// query closer to one of them than to the entry's own questions, or nearly as close
    /// and naming a word of the negative that the entry's own questions never use (临时),
    /// loses the entry (unless it names a word of the entry's own questions that the
    /// negative lacks); content teams fix a near miss here without touching weights.
    pub negative: Vec<String>,
    pub scope: Scope,
    pub valid_from: Option<Date>,
    pub valid_until: Option<Date>,
    pub location: Location,
}

impl Entry {
    /// The standard question first, then the similar ones.
    pub fn questions(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.question.as_str()).chain(self.similar.iter().map(String::as_str))
    }

    /// Valid dates are inclusive on both ends: a campaign "until 2026-12-31" still
    /// answers on New Year's Eve.
    pub fn is_active(&self, today: Date) -> bool {
        self.valid_from.is_none_or(|d| d <= today) && self.valid_until.is_none_or(|d| today <= d)
    }

    pub fn visible_to(&self, branch: Option<&str>) -> bool {
        match &self.scope {
            Scope::All => true,
            Scope::Branch(b) => branch == Some(b.as_str()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct KnowledgeBase {
    entries: Vec<Entry>,
    by_id: HashMap<String, usize>,
    user_words: Vec<DictWord>,
    synonyms: Synonyms,
    /// The bot's own texts (`replies.toml`, or the defaults).
    wording: wording::Wording,
    /// Words for things the bank does not serve (`outofscope.txt`), in [`search_form`].
    out_of_scope: Vec<String>,
    /// Products a customer cannot mean at the same time (`products.txt`): one group of
    /// words per product, in [`search_form`].
    products: Vec<Vec<String>>,
    /// For each product group, the group it is a kind of (房贷 `<` 贷款), if any: always a
    /// group of an earlier line, so the parents form no cycle.
    product_parents: Vec<Option<usize>>,
    /// Pairs of entries (indices, smaller first) whose answers both answer many of the
    /// same questions (`overlaps.txt`): 信用卡晚还一天 is answered by the grace period
    /// and by the overdue entry alike. When two such entries lead a ranking, neither
    /// makes the other's lead "too close to call" (see `Retriever::band`).
    overlaps: HashSet<(usize, usize)>,
}

/// What `kb check` reports on success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub entries: usize,
    pub similar_questions: usize,
    pub categories: usize,
    pub files: usize,
    pub user_words: usize,
    pub synonyms: usize,
    /// Words of `outofscope.txt`: shown so an editor sees the file was read.
    pub out_of_scope_words: usize,
    /// Product groups of `products.txt`.
    pub products: usize,
    /// Entry pairs of `overlaps.txt`.
    pub overlaps: usize,
}

const USERDICT: &str = "userdict.txt";
const SYNONYMS: &str = "synonyms.txt";
const OUT_OF_SCOPE: &str = "outofscope.txt";
const PRODUCTS: &str = "products.txt";
const OVERLAPS: &str = "overlaps.txt";

impl KnowledgeBase {
    /// Loads and validates every content file in `dir` (not recursive: one directory
    /// is one knowledge base).
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let mut issues = Vec::new();
        let mut entries = Vec::new();
        let mut user_words = Vec::new();
        let mut synonyms = Vec::new();
        let mut wording = None;
        let mut out_of_scope = Vec::new();
        let mut products = Vec::new();
        let mut overlaps: Vec<(usize, Vec<String>)> = Vec::new();
        let mut overlaps_path = PathBuf::new();
        let mut entry_files = 0;
        for path in &files {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') || name.ends_with(".md") || name.ends_with('~') {
                continue;
            }
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            let result = match (name, ext.as_deref()) {
                (USERDICT, _) => load_userdict(path).map(|w| user_words = w),
                (SYNONYMS, _) => load_synonyms(path).map(|s| synonyms = s),
                (OUT_OF_SCOPE, _) => load_out_of_scope(path).map(|w| out_of_scope = w),
                (PRODUCTS, _) => load_products(path).map(|p| products = p),
                (OVERLAPS, _) => {
                    let (lines, problems) = load_overlaps(path);
                    overlaps = lines;
                    overlaps_path = path.clone();
                    issues.extend(problems);
                    Ok(())
                }
                (wording::REPLIES, _) => wording::Wording::load(path).map(|w| wording = Some(w)),
                (_, Some("toml" | "csv" | "tsv")) => {
                    let (found, mut problems) = match ext.as_deref() {
                        Some("toml") => load_toml(path),
                        Some("csv") => load_table(path, b','),
                        _ => load_table(path, b'\t'),
                    };
                    entries.extend(found);
                    issues.append(&mut problems);
                    Ok(())
                }
                (_, Some("xlsx")) => {
                    let (found, mut problems) = xlsx::load_xlsx(path);
                    entries.extend(found);
                    issues.append(&mut problems);
                    Ok(())
                }
                (_, Some("xls")) => Err(vec![issue(
                    path,
                    1,
                    None,
                    "old .xls workbooks are not read: save the sheet as .xlsx or CSV UTF-8",
                )]),
                _ => Err(vec![issue(
                    path,
                    1,
                    None,
                    "unknown file type; expected .toml, .csv, .tsv or .xlsx entries, userdict.txt, synonyms.txt, outofscope.txt, products.txt or overlaps.txt",
                )]),
            };
            if name != wording::REPLIES
                && matches!(ext.as_deref(), Some("toml" | "csv" | "tsv" | "xlsx"))
            {
                entry_files += 1;
            }
            if let Err(mut found) = result {
                issues.append(&mut found);
            }
        }
        if entry_files == 0 && issues.is_empty() {
            issues.push(issue(
                dir,
                1,
                None,
                "no knowledge-base files (.toml, .csv, .tsv, .xlsx) in this directory",
            ));
        }
        // Checked here, against every entry read, so that one run of `kb check` names a
        // stale id beside any other problem of the content.
        let known: HashSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        for (line, ids) in &overlaps {
            for id in ids.iter().filter(|id| !known.contains(id.as_str())) {
                issues.push(issue(
                    &overlaps_path,
                    *line,
                    None,
                    format!("\"{id}\" is not the id of any entry"),
                ));
            }
        }
        let synonyms = Synonyms::from_groups(synonyms);
        match KnowledgeBase::build(entries, user_words, synonyms, true) {
            Ok(mut kb) if issues.is_empty() => {
                kb.wording = wording.unwrap_or_default();
                kb.out_of_scope = out_of_scope;
                (kb.products, kb.product_parents) = products.into_iter().unzip();
                kb.set_overlaps(&overlaps);
                let unreachable = kb.unreachable_questions();
                if unreachable.is_empty() {
                    Ok(kb)
                } else {
                    Err(ContentErrors(sorted(unreachable)).into())
                }
            }
            Ok(_) => Err(ContentErrors(sorted(issues)).into()),
            Err(mut more) => {
                issues.append(&mut more);
                Err(ContentErrors(sorted(issues)).into())
            }
        }
    }

    /// Builds a knowledge base from entries made elsewhere (the `eval` loader, tests),
    /// with the same validation as files get.
    pub fn from_entries(entries: Vec<Entry>) -> Result<Self> {
        KnowledgeBase::build(entries, Vec::new(), Synonyms::default(), true)
            .map_err(|i| ContentErrors(sorted(i)).into())
    }

    /// For benchmark question sets, which legitimately repeat a question under two
    /// entries: only ids must be unique.
    pub fn from_entries_lenient(entries: Vec<Entry>) -> Result<Self> {
        KnowledgeBase::build(entries, Vec::new(), Synonyms::default(), false)
            .map_err(|i| ContentErrors(sorted(i)).into())
    }

    fn build(
        entries: Vec<Entry>,
        user_words: Vec<DictWord>,
        synonyms: Synonyms,
        strict: bool,
    ) -> std::result::Result<Self, Vec<ContentIssue>> {
        let mut issues = Vec::new();
        let mut by_id: HashMap<String, usize> = HashMap::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            if let Some(&first) = by_id.get(&e.id) {
                issues.push(ContentIssue {
                    location: e.location.clone(),
                    message: format!(
                        "duplicate id \"{}\" (first defined at {})",
                        e.id, entries[first].location
                    ),
                });
            } else {
                by_id.insert(e.id.clone(), i);
            }
        }
        if strict {
            let mut seen: HashMap<String, usize> = HashMap::new();
            for (i, e) in entries.iter().enumerate() {
                for q in e.questions() {
                    let key = search_form(q);
                    if key.is_empty() {
                        issues.push(ContentIssue {
                            location: e.location.clone(),
                            message: format!(
                                "entry \"{}\": question \"{q}\" has no words to search for",
                                e.id
                            ),
                        });
                        continue;
                    }
                    match seen.get(&key) {
                        Some(&j) if j == i => issues.push(ContentIssue {
                            location: e.location.clone(),
                            message: format!(
                                "entry \"{}\": question \"{q}\" is listed twice",
                                e.id
                            ),
                        }),
                        Some(&j) => issues.push(ContentIssue {
                            location: e.location.clone(),
                            message: format!(
                                "entry \"{}\": question \"{q}\" is also a question of entry \"{}\" ({}); a question may answer to one entry only",
                                e.id, entries[j].id, entries[j].location
                            ),
                        }),
                        None => {
                            seen.insert(key, i);
                        }
                    }
                }
                for r in &e.related {
                    if r == &e.id {
                        issues.push(ContentIssue {
                            location: e.location.clone(),
                            message: format!("entry \"{}\" lists itself as related", e.id),
                        });
                    } else if !by_id.contains_key(r) {
                        issues.push(ContentIssue {
                            location: e.location.clone(),
                            message: format!(
                                "entry \"{}\": related id \"{r}\" does not exist",
                                e.id
                            ),
                        });
                    }
                }
            }
        }
        if issues.is_empty() {
            Ok(KnowledgeBase {
                entries,
                by_id,
                user_words,
                synonyms,
                wording: wording::Wording::default(),
                out_of_scope: Vec::new(),
                products: Vec::new(),
                product_parents: Vec::new(),
                overlaps: HashSet::new(),
            })
        } else {
            Err(issues)
        }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn get(&self, index: usize) -> Option<&Entry> {
        self.entries.get(index)
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    pub fn user_words(&self) -> &[DictWord] {
        &self.user_words
    }

    pub fn synonyms(&self) -> &Synonyms {
        &self.synonyms
    }

    /// The bot's own texts for this knowledge base.
    pub fn wording(&self) -> &wording::Wording {
        &self.wording
    }

    /// Words naming things the bank does not serve (other companies' wallets and credit
    /// products, dreams, fortune telling), from `outofscope.txt`, in [`search_form`]. A
    /// message naming one is answered only by an entry whose own questions name it too
    /// (see `Retriever::rank`): 花呗逾期了会怎样 shares every other word with
    /// 信用卡逾期了会怎样, so no similarity threshold can tell them apart.
    pub fn out_of_scope(&self) -> &[String] {
        &self.out_of_scope
    }

    /// Product groups (`products.txt`), each a list of words in [`search_form`]: a
    /// message that names one product is not answered with an entry whose standard
    /// question names only another (see `Retriever::rank`).
    pub fn products(&self) -> &[Vec<String>] {
        &self.products
    }

    /// The product group that `group` is a kind of (`房贷 按揭 < 贷款` in `products.txt`).
    pub fn product_parent(&self, group: usize) -> Option<usize> {
        self.product_parents.get(group).copied().flatten()
    }

    /// Whether `ancestor` is `group` or one of the groups it is a kind of.
    fn product_within(&self, group: usize, ancestor: usize) -> bool {
        let mut g = Some(group);
        // Parents always come from earlier lines, so this walk ends.
        while let Some(current) = g {
            if current == ancestor {
                return true;
            }
            g = self.product_parent(current);
        }
        false
    }

    /// The product groups that `normalized` text names, by index, the most specific only:
    /// 房屋贷款提前还款 names 贷款 and its kind 房贷, and means 房贷. A substring test, as for
    /// out-of-scope words: product names are compounds (信用卡, 房贷) that jieba may cut
    /// differently in a message and a question.
    pub fn products_named(&self, normalized: &str) -> Vec<usize> {
        let named: Vec<usize> = self
            .products
            .iter()
            .enumerate()
            .filter(|(_, g)| g.iter().any(|w| normalized.contains(w.as_str())))
            .map(|(i, _)| i)
            .collect();
        named
            .iter()
            .copied()
            .filter(|&g| {
                !named
                    .iter()
                    .any(|&other| other != g && self.product_within(other, g))
            })
            .collect()
    }

    /// Similar questions that name a product (`products.txt`) their entry's standard
    /// question does not agree with. The retriever keeps an entry from answering a
    /// message that names only other products than its standard question (see
    /// `Retriever::rank`), so a customer who words such a question exactly as written is
    /// never answered with it: ln-consumer-early's 车贷提前还清要付违约金吗 under
    /// 消费贷可以提前还吗 went to another entry. An editor learns it from `kefu kb check`,
    /// with the file and line, instead of from a customer.
    fn unreachable_questions(&self) -> Vec<ContentIssue> {
        let names = |groups: &[usize]| {
            groups
                .iter()
                .filter_map(|&g| self.products.get(g).and_then(|w| w.first()))
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("、")
        };
        let mut issues = Vec::new();
        for e in &self.entries {
            let own = self.products_named(&search_form(&e.question));
            if own.is_empty() {
                continue;
            }
            for q in &e.similar {
                let asked = self.products_named(&search_form(q));
                if asked.is_empty()
                    || asked
                        .iter()
                        .any(|&a| own.iter().any(|&o| self.products_agree(a, o)))
                {
                    continue;
                }
                let asked = names(&asked);
                issues.push(ContentIssue {
                    location: e.location.clone(),
                    message: format!(
                        "entry \"{}\": similar question \"{q}\" names {asked} but the standard question \"{}\" names only {} (products.txt), and a message about {asked} is never answered with this entry: name {asked} in the standard question too, or move this question to an entry about {asked}",
                        e.id,
                        e.question,
                        names(&own),
                    ),
                });
            }
        }
        issues
    }

    /// Whether a message about product `asked` may be answered with an entry about `own`:
    /// the same product, or one is a kind of the other. A general loan entry answers a
    /// mortgage question and a mortgage entry a question about loans, but a car-loan entry
    /// does not answer a mortgage question.
    pub fn products_agree(&self, asked: usize, own: usize) -> bool {
        self.product_within(asked, own) || self.product_within(own, asked)
    }

    /// Replaces the product groups (tests that build a knowledge base from entries); each
    /// word is stored in [`search_form`].
    pub fn with_products<I, G, S>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = G>,
        G: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.products = groups
            .into_iter()
            .map(|g| g.into_iter().map(|w| search_form(w.as_ref())).collect())
            .collect();
        self.product_parents = vec![None; self.products.len()];
        self
    }

    /// Makes product group `child` a kind of `parent` (tests that build a knowledge base
    /// from entries). `parent` must come before `child`, as in `products.txt`.
    pub fn with_product_parent(mut self, child: usize, parent: usize) -> Self {
        if parent < child && child < self.product_parents.len() {
            self.product_parents[child] = Some(parent);
        }
        self
    }

    /// Replaces the out-of-scope words (tests and tools that build a knowledge base from
    /// entries); each is stored in [`search_form`], empty ones are dropped.
    pub fn with_out_of_scope<I, S>(mut self, words: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.out_of_scope = words
            .into_iter()
            .map(|w| search_form(w.as_ref()))
            .filter(|w| !w.is_empty())
            .collect();
        self
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Makes entry locations relative to `base` (content loaded from a temporary copy
    /// reports `knowledge-base/cards.toml`, not the temporary path).
    pub(crate) fn relocate(&mut self, base: &Path) {
        for e in &mut self.entries {
            if let Ok(rel) = e.location.file.strip_prefix(base) {
                e.location.file = rel.to_owned();
            }
        }
    }

    pub fn summary(&self) -> Summary {
        let files: BTreeSet<&Path> = self
            .entries
            .iter()
            .map(|e| e.location.file.as_path())
            .collect();
        let categories: BTreeSet<&str> = self.entries.iter().map(|e| e.category.as_str()).collect();
        Summary {
            entries: self.entries.len(),
            similar_questions: self.entries.iter().map(|e| e.similar.len()).sum(),
            categories: categories.len(),
            files: files.len(),
            user_words: self.user_words.len(),
            synonyms: self.synonyms.len(),
            out_of_scope_words: self.out_of_scope.len(),
            products: self.products.len(),
            overlaps: self.overlaps.len(),
        }
    }

    /// Whether entries `a` and `b` (indices) are listed together in `overlaps.txt`.
    pub fn overlap(&self, a: usize, b: usize) -> bool {
        self.overlaps.contains(&(a.min(b), a.max(b)))
    }

    /// Records the pairs of `overlaps.txt` (read by [`load_overlaps`]; `load_dir` has
    /// already reported every id that names no entry, since an editor who renamed an
    /// entry must hear that the pair no longer does anything).
    fn set_overlaps(&mut self, lines: &[(usize, Vec<String>)]) {
        for (_, ids) in lines {
            let found: Vec<usize> = ids.iter().filter_map(|id| self.index_of(id)).collect();
            // Ids on a line are distinct (`load_overlaps`), and so are their entries.
            for (k, &a) in found.iter().enumerate() {
                for &b in &found[k + 1..] {
                    self.overlaps.insert((a.min(b), a.max(b)));
                }
            }
        }
    }
}

fn sorted(mut issues: Vec<ContentIssue>) -> Vec<ContentIssue> {
    issues.sort_by(|a, b| a.location.cmp(&b.location));
    issues
}

fn issue(
    path: &Path,
    line: usize,
    column: Option<usize>,
    message: impl Into<String>,
) -> ContentIssue {
    ContentIssue {
        location: Location::new(path, line, column),
        message: message.into(),
    }
}

/// The field checks shared by every file format; `at(field)` locates a field's value.
struct EntryDraft {
    id: String,
    category: Option<String>,
    question: String,
    similar: Vec<String>,
    answer: String,
    related: Vec<String>,
    keywords: Vec<String>,
    negative: Vec<String>,
    scope: Option<String>,
    valid_from: Option<String>,
    valid_until: Option<String>,
}

#[derive(Clone, Copy)]
enum Field {
    Id,
    Question,
    Similar,
    Negative,
    Answer,
    Scope,
    ValidFrom,
    ValidUntil,
}

/// Returns the entry even when a field is wrong, so cross-entry checks (duplicate ids,
/// related ids) still run and the editor sees every problem in one pass.
fn finish_entry(
    d: EntryDraft,
    location: Location,
    at: impl Fn(Field) -> Location,
    issues_out: &mut Vec<ContentIssue>,
) -> Entry {
    let mut issues = Vec::new();
    let mut problem = |f: Field, msg: String| {
        issues.push(ContentIssue {
            location: at(f),
            message: msg,
        })
    };
    let id = d.id.trim().to_owned();
    if id.is_empty() {
        problem(Field::Id, "entry has an empty id".into());
    } else if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        problem(
            Field::Id,
            format!("id \"{id}\" may only use letters, digits, '-', '_' and '.'"),
        );
    }
    let question = d.question.trim().to_owned();
    if question.is_empty() {
        problem(
            Field::Question,
            format!("entry \"{id}\" has an empty question"),
        );
    }
    let answer = d.answer.trim().to_owned();
    if answer.is_empty() {
        problem(Field::Answer, format!("entry \"{id}\" has an empty answer"));
    }
    let mut similar = Vec::new();
    for s in d.similar {
        let s = s.trim();
        if s.is_empty() {
            problem(
                Field::Similar,
                format!("entry \"{id}\" has an empty similar question"),
            );
        } else {
            similar.push(s.to_owned());
        }
    }
    let mut negative = Vec::new();
    for s in d.negative {
        let s = s.trim();
        let same_as_own = !s.is_empty()
            && std::iter::once(&question)
                .chain(similar.iter())
                .any(|q| search_form(q) == search_form(s));
        if s.is_empty() {
            problem(
                Field::Negative,
                format!("entry \"{id}\" has an empty negative question"),
            );
        } else if same_as_own {
            problem(
                Field::Negative,
                format!(
                    "entry \"{id}\" lists \"{s}\" both as its own question and as a negative one"
                ),
            );
        } else {
            negative.push(s.to_owned());
        }
    }
    let scope = match d.scope.as_deref().map(str::trim) {
        None | Some("" | "all" | "全部") => Scope::All,
        Some(code) if code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
            Scope::Branch(code.to_owned())
        }
        Some(other) => {
            problem(
                Field::Scope,
                format!(
                    "scope \"{other}\" is neither \"all\" nor a branch code (letters and digits)"
                ),
            );
            Scope::All
        }
    };
    let mut date = |f: Field, v: Option<String>| -> Option<Date> {
        let v = v?;
        let v = v.trim();
        if v.is_empty() {
            return None;
        }
        match parse_date(v) {
            Some(d) => Some(d),
            None => {
                problem(f, format!("date \"{v}\" is not a date like 2026-12-31"));
                None
            }
        }
    };
    let valid_from = date(Field::ValidFrom, d.valid_from);
    let valid_until = date(Field::ValidUntil, d.valid_until);
    if let (Some(from), Some(until)) = (valid_from, valid_until) {
        if until < from {
            problem(
                Field::ValidUntil,
                format!("entry \"{id}\" ends ({until}) before it starts ({from})"),
            );
        }
    }
    issues_out.append(&mut issues);
    Entry {
        id,
        category: d
            .category
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "其他".to_owned()),
        question,
        similar,
        answer,
        related: clean_list(d.related),
        keywords: clean_list(d.keywords),
        negative,
        scope,
        valid_from,
        valid_until,
        location,
    }
}

fn clean_list(v: Vec<String>) -> Vec<String> {
    v.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Accepts 2026-12-31, 2026/12/31 and 2026.12.31: spreadsheets reformat dates freely.
pub fn parse_date(s: &str) -> Option<Date> {
    let parts: Vec<&str> = s.trim().split(['-', '/', '.']).collect();
    let [y, m, d] = parts.as_slice() else {
        return None;
    };
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    entry: Vec<Spanned<TomlEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlEntry {
    id: Spanned<String>,
    #[serde(default)]
    category: Option<String>,
    question: Spanned<String>,
    #[serde(default)]
    similar: Vec<String>,
    answer: Spanned<String>,
    #[serde(default)]
    related: Vec<String>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    negative: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    scope: Option<Spanned<String>>,
    #[serde(default)]
    valid_from: Option<Spanned<toml::Value>>,
    #[serde(default)]
    valid_until: Option<Spanned<toml::Value>>,
}

/// Entries found and problems found; a file that cannot be parsed at all yields no entries.
type Loaded = (Vec<Entry>, Vec<ContentIssue>);

fn load_toml(path: &Path) -> Loaded {
    let text = match read_text(path) {
        Ok(t) => t,
        Err(i) => return (Vec::new(), vec![i]),
    };
    let lines = LineIndex::new(&text);
    let file: TomlFile = match toml::from_str(&text) {
        Ok(f) => f,
        Err(e) => return (Vec::new(), vec![toml_issue(path, &lines, &e)]),
    };
    if file.entry.is_empty() {
        return (
            Vec::new(),
            vec![issue(path, 1, None, "no [[entry]] tables in this file")],
        );
    }
    let mut entries = Vec::new();
    let mut issues = Vec::new();
    for spanned in file.entry {
        let entry_line = lines.line_of(spanned.span().start);
        let e = spanned.into_inner();
        let line_of = |s: &std::ops::Range<usize>| lines.line_of(s.start);
        let id_line = line_of(&e.id.span());
        let q_line = line_of(&e.question.span());
        let a_line = line_of(&e.answer.span());
        let scope_line = e.scope.as_ref().map_or(entry_line, |s| line_of(&s.span()));
        let negative_line = e
            .negative
            .as_ref()
            .map_or(entry_line, |s| line_of(&s.span()));
        let from_line = e
            .valid_from
            .as_ref()
            .map_or(entry_line, |s| line_of(&s.span()));
        let until_line = e
            .valid_until
            .as_ref()
            .map_or(entry_line, |s| line_of(&s.span()));
        let date_text = |v: Option<Spanned<toml::Value>>| {
            v.map(|v| match v.into_inner() {
                toml::Value::String(s) => s,
                other => other.to_string(),
            })
        };
        let draft = EntryDraft {
            id: e.id.into_inner(),
            category: e.category,
            question: e.question.into_inner(),
            similar: e.similar,
            answer: e.answer.into_inner(),
            related: e.related,
            keywords: e.keywords,
            negative: e.negative.map(Spanned::into_inner).unwrap_or_default(),
            scope: e.scope.map(Spanned::into_inner),
            valid_from: date_text(e.valid_from),
            valid_until: date_text(e.valid_until),
        };
        let at = |f: Field| {
            let line = match f {
                Field::Id => id_line,
                Field::Question => q_line,
                Field::Answer => a_line,
                Field::Similar => entry_line,
                Field::Negative => negative_line,
                Field::Scope => scope_line,
                Field::ValidFrom => from_line,
                Field::ValidUntil => until_line,
            };
            Location::new(path, line, None)
        };
        entries.push(finish_entry(
            draft,
            Location::new(path, id_line, None),
            at,
            &mut issues,
        ));
    }
    (entries, issues)
}

/// Column names as spreadsheets may label them, in English or Chinese.
const COLUMNS: &[(&str, &[&str])] = &[
    ("id", &["id", "编号"]),
    ("category", &["category", "分类", "类别"]),
    ("question", &["question", "标准问题", "问题"]),
    ("similar", &["similar", "相似问法", "相似问题"]),
    ("answer", &["answer", "答案", "回答"]),
    ("related", &["related", "相关问题", "关联问题"]),
    ("keywords", &["keywords", "关键词"]),
    ("negative", &["negative", "否定问法"]),
    ("scope", &["scope", "适用范围", "网点"]),
    ("valid_from", &["valid_from", "生效日期"]),
    ("valid_until", &["valid_until", "失效日期"]),
];

fn load_table(path: &Path, delimiter: u8) -> Loaded {
    let text = match read_text(path) {
        Ok(t) => t,
        Err(i) => return (Vec::new(), vec![i]),
    };
    // csv counts a CRLF's line break one record late; Windows exports are the norm here.
    let text = text.replace("\r\n", "\n");
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .quoting(delimiter == b',')
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            return (
                Vec::new(),
                vec![issue(
                    path,
                    1,
                    None,
                    format!("cannot read the header row: {e}"),
                )],
            );
        }
    };
    let headers: Vec<String> = headers.iter().map(str::to_owned).collect();
    let mut issues = Vec::new();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(1, |p| p.line() as usize);
                issues.push(issue(path, line, None, format!("unreadable row: {e}")));
                continue;
            }
        };
        let line = record.position().map_or(1, |p| p.line() as usize);
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if record.len() != headers.len() {
            issues.push(issue(
                path,
                line,
                None,
                format!(
                    "row has {} fields but the header has {}; check for a missing {} or an unquoted {}",
                    record.len(),
                    headers.len(),
                    if delimiter == b'\t' { "tab" } else { "comma" },
                    if delimiter == b'\t' { "tab" } else { "comma (quote fields that contain commas)" },
                ),
            ));
            continue;
        }
        rows.push((line, record.iter().map(str::to_owned).collect()));
    }
    let (entries, mut more) = table_entries(path, 1, &headers, rows);
    issues.append(&mut more);
    (entries, issues)
}

/// Entries from a table: a CSV or TSV file, or one sheet of a spreadsheet. `rows` are
/// the data rows with their line (row) numbers; blank rows are already left out.
pub(crate) fn table_entries(
    path: &Path,
    header_line: usize,
    headers: &[String],
    rows: Vec<(usize, Vec<String>)>,
) -> Loaded {
    let mut column_of: HashMap<&'static str, usize> = HashMap::new();
    let mut issues = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        let h = h.trim().to_lowercase();
        match COLUMNS
            .iter()
            .find(|(_, names)| names.contains(&h.as_str()))
        {
            Some((name, _)) if column_of.contains_key(name) => issues.push(issue(
                path,
                header_line,
                Some(i + 1),
                format!("column \"{h}\" appears twice"),
            )),
            Some((name, _)) => {
                column_of.insert(name, i);
            }
            None => issues.push(issue(
                path,
                header_line,
                Some(i + 1),
                format!(
                    "unknown column \"{h}\"; known columns: {}",
                    COLUMNS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }
    for required in ["id", "question", "answer"] {
        if !column_of.contains_key(required) {
            issues.push(issue(
                path,
                header_line,
                None,
                format!("missing required column \"{required}\""),
            ));
        }
    }
    if !issues.is_empty() {
        return (Vec::new(), issues);
    }
    let mut entries = Vec::new();
    for (line, record) in rows {
        let get = |name: &str| {
            column_of
                .get(name)
                .and_then(|&i| record.get(i))
                .map(String::to_owned)
        };
        // A blank cell is an empty list; `a||b` still reports its empty item.
        let list = |name: &str| {
            get(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.split(['|', '｜']).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let draft = EntryDraft {
            id: get("id").unwrap_or_default(),
            category: get("category"),
            question: get("question").unwrap_or_default(),
            similar: list("similar"),
            answer: get("answer").unwrap_or_default(),
            related: list("related"),
            keywords: list("keywords"),
            negative: list("negative"),
            scope: get("scope"),
            valid_from: get("valid_from"),
            valid_until: get("valid_until"),
        };
        let col = |name: &str| column_of.get(name).map(|i| i + 1);
        let at = |f: Field| {
            let column = match f {
                Field::Id => col("id"),
                Field::Question => col("question"),
                Field::Similar => col("similar"),
                Field::Negative => col("negative"),
                Field::Answer => col("answer"),
                Field::Scope => col("scope"),
                Field::ValidFrom => col("valid_from"),
                Field::ValidUntil => col("valid_until"),
            };
            Location::new(path, line, column)
        };
        entries.push(finish_entry(
            draft,
            Location::new(path, line, None),
            at,
            &mut issues,
        ));
    }
    (entries, issues)
}

/// The lines of a word-list file (`userdict.txt`, `synonyms.txt`, `outofscope.txt`) that
/// hold something: trimmed, with their 0-based index, blank lines and `#` comments skipped.
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

/// `overlaps.txt`: one group per line, two or more entry ids separated by spaces; every
/// two ids of a line overlap. Returns each good line's number (1-based) and ids, and the
/// problems of the others; the ids are checked against the entries once all are read.
fn load_overlaps(path: &Path) -> (Vec<(usize, Vec<String>)>, Vec<ContentIssue>) {
    let text = match read_text(path) {
        Ok(text) => text,
        Err(i) => return (Vec::new(), vec![i]),
    };
    let mut lines = Vec::new();
    let mut issues = Vec::new();
    for (n, line) in content_lines(&text) {
        let mut ids: Vec<String> = Vec::new();
        for id in line.split_whitespace() {
            if !ids.iter().any(|seen| seen == id) {
                ids.push(id.to_owned());
            }
        }
        if ids.len() < 2 {
            issues.push(issue(
                path,
                n + 1,
                None,
                "write two or more different entry ids on a line, separated by spaces",
            ));
        } else {
            lines.push((n + 1, ids));
        }
    }
    (lines, issues)
}

fn load_userdict(path: &Path) -> std::result::Result<Vec<DictWord>, Vec<ContentIssue>> {
    let text = read_text(path).map_err(|i| vec![i])?;
    let mut words = Vec::new();
    let mut issues = Vec::new();
    for (n, line) in content_lines(&text) {
        let mut parts = line.split_whitespace();
        let word = parts.next().unwrap_or_default().to_owned();
        let freq = match parts.next().map(str::parse::<usize>) {
            None => None,
            Some(Ok(f)) => Some(f),
            Some(Err(_)) => {
                issues.push(issue(
                    path,
                    n + 1,
                    None,
                    "expected `词 词频 词性`: the frequency must be a whole number",
                ));
                continue;
            }
        };
        let tag = parts.next().map(str::to_owned);
        if parts.next().is_some() {
            issues.push(issue(
                path,
                n + 1,
                None,
                "expected `词 词频 词性`: too many fields",
            ));
            continue;
        }
        words.push(DictWord { word, freq, tag });
    }
    if issues.is_empty() {
        Ok(words)
    } else {
        Err(issues)
    }
}

/// `outofscope.txt`: one word or phrase a line, `#` comments. A phrase must stay one
/// word in [`search_form`] (no spaces or punctuation inside), because it is matched as
/// a substring of the message's search form.
fn load_out_of_scope(path: &Path) -> std::result::Result<Vec<String>, Vec<ContentIssue>> {
    let text = read_text(path).map_err(|i| vec![i])?;
    let mut words = Vec::new();
    let mut issues = Vec::new();
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    for (n, line) in content_lines(&text) {
        let word = search_form(line);
        if word.is_empty() || word.contains(char::is_whitespace) {
            issues.push(issue(
                path,
                n + 1,
                None,
                "an out-of-scope line holds one word or phrase, without spaces or punctuation",
            ));
            continue;
        }
        if let Some(prev) = first_seen.insert(word.clone(), n + 1) {
            issues.push(issue(
                path,
                n + 1,
                None,
                format!("\"{line}\" is already listed on line {prev}"),
            ));
            continue;
        }
        words.push(word);
    }
    if issues.is_empty() {
        Ok(words)
    } else {
        Err(issues)
    }
}

/// One line of `products.txt`: the product's words and the index of the line it is a kind of.
type ProductLine = (Vec<String>, Option<usize>);

/// `products.txt`: one product a line, its words separated by spaces (信用卡 贷记卡), `#`
/// comments. Each word must stay one word in [`search_form`] (it is matched as a substring
/// of the message and of the standard question), and no word may name two products:
/// the check would then contradict itself. A line may end with `< word`, a word of an
/// earlier line: the product is a kind of that one (`房贷 按揭 < 贷款`), so a mortgage
/// question may get a general loan entry but not a car-loan one. Requiring an earlier
/// line keeps the hierarchy free of cycles. Returns each group with its parent's index.
fn load_products(path: &Path) -> std::result::Result<Vec<ProductLine>, Vec<ContentIssue>> {
    let text = read_text(path).map_err(|i| vec![i])?;
    let mut groups: Vec<ProductLine> = Vec::new();
    let mut issues = Vec::new();
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    // The group index of each word, for `<` references.
    let mut group_of: HashMap<String, usize> = HashMap::new();
    for (n, line) in content_lines(&text) {
        // A Chinese input method types the full-width ＜.
        let line = line.replace('＜', "<");
        let (names, parent_ref) = match line.split_once('<') {
            Some((names, parent)) => (names, Some(parent.trim())),
            None => (line.as_str(), None),
        };
        let parent = match parent_ref {
            None => None,
            Some(reference) => {
                let words: Vec<&str> = reference.split_whitespace().collect();
                match words.as_slice() {
                    [one] => match group_of.get(&search_form(one)) {
                        Some(&g) => Some(g),
                        None => {
                            issues.push(issue(
                                path,
                                n + 1,
                                None,
                                format!(
                                    "\"< {one}\": the product after < must be a word of an earlier line"
                                ),
                            ));
                            None
                        }
                    },
                    _ => {
                        issues.push(issue(
                            path,
                            n + 1,
                            None,
                            "write exactly one product word after < (the product this one is a kind of)"
                                .to_owned(),
                        ));
                        None
                    }
                }
            }
        };
        let mut group = Vec::new();
        for raw in names.split_whitespace() {
            let word = search_form(raw);
            if word.is_empty() || word.contains(char::is_whitespace) {
                issues.push(issue(
                    path,
                    n + 1,
                    None,
                    format!(
                        "\"{raw}\": write a product word without punctuation (it is matched as one word)"
                    ),
                ));
                continue;
            }
            if let Some(prev) = first_seen.insert(word.clone(), n + 1) {
                issues.push(issue(
                    path,
                    n + 1,
                    None,
                    format!("\"{raw}\" already names the product on line {prev}"),
                ));
                continue;
            }
            group.push(word);
        }
        if group.is_empty() {
            if parent_ref.is_some() {
                issues.push(issue(
                    path,
                    n + 1,
                    None,
                    "name the product before < (the words the customer uses for it)".to_owned(),
                ));
            }
            continue;
        }
        for w in &group {
            group_of.insert(w.clone(), groups.len());
        }
        groups.push((group, parent));
    }
    if issues.is_empty() {
        Ok(groups)
    } else {
        Err(issues)
    }
}

fn load_synonyms(path: &Path) -> std::result::Result<Vec<Vec<String>>, Vec<ContentIssue>> {
    let text = read_text(path).map_err(|i| vec![i])?;
    let mut groups = Vec::new();
    let mut issues = Vec::new();
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    for (n, line) in content_lines(&text) {
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        if words.len() < 2 {
            issues.push(issue(
                path,
                n + 1,
                None,
                "a synonym group needs at least two words separated by spaces",
            ));
            continue;
        }
        for w in &words {
            let key = search_form(w);
            if let Some(prev) = first_seen.insert(key, n + 1) {
                issues.push(issue(
                    path,
                    n + 1,
                    None,
                    format!("\"{w}\" is already in the group on line {prev}; a word may be in one group only"),
                ));
            }
        }
        groups.push(words);
    }
    if issues.is_empty() {
        Ok(groups)
    } else {
        Err(issues)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    fn errors(dir: &Path) -> Vec<String> {
        match KnowledgeBase::load_dir(dir) {
            Err(Error::Content(ContentErrors(issues))) => {
                issues.iter().map(|i| i.to_string()).collect()
            }
            other => panic!("expected content errors, got {other:?}"),
        }
    }

    const GOOD: &str = r#"
[[entry]]
id = "a"
category = "银行卡"
question = "银行卡丢了怎么办"
similar = ["卡丢了", "卡不见了"]
answer = "先挂失。"
related = ["b"]

[[entry]]
id = "b"
question = "怎么补卡"
similar = ["补办银行卡", "补一张卡"]
answer = "带身份证去网点。"
valid_until = 2030-01-01
"#;

    #[test]
    fn negative_questions_load_from_toml_and_csv_and_are_checked_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.toml",
            "[[entry]]\nid = \"fee\"\nquestion = \"借记卡年费多少\"\nnegative = [\"信用卡年费多少\"]\nanswer = \"免年费。\"\n",
        );
        write(
            dir.path(),
            "b.csv",
            "id,question,answer,否定问法\ncc,信用卡怎么激活,打电话。,借记卡怎么激活|储蓄卡怎么激活\n",
        );
        let kb = KnowledgeBase::load_dir(dir.path()).unwrap();
        let by_id = |id: &str| kb.entries()[kb.index_of(id).unwrap()].negative.clone();
        assert_eq!(by_id("fee"), vec!["信用卡年费多少"]);
        assert_eq!(by_id("cc"), vec!["借记卡怎么激活", "储蓄卡怎么激活"]);

        let bad = tempfile::tempdir().unwrap();
        write(
            bad.path(),
            "a.toml",
            "[[entry]]\nid = \"fee\"\nquestion = \"借记卡年费多少\"\nanswer = \"免年费。\"\nnegative = [\"借记卡年费多少？\", \" \"]\n",
        );
        let joined = errors(bad.path()).join("\n");
        assert!(
            joined.contains("a.toml:5") && joined.contains("both as its own question"),
            "{joined}"
        );
        assert!(joined.contains("empty negative question"), "{joined}");
    }

    #[test]
    fn loads_toml_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", GOOD);
        let kb = KnowledgeBase::load_dir(dir.path()).unwrap();
        let s = kb.summary();
        assert_eq!((s.entries, s.similar_questions, s.categories), (2, 4, 2));
        assert_eq!(kb.entries()[1].valid_until, parse_date("2030-01-01"));
    }

    #[test]
    fn every_problem_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.toml",
            r#"[[entry]]
id = "a"
question = "银行卡丢了怎么办"
answer = "  "
related = ["nope"]

[[entry]]
id = "a"
question = "银行卡丢了怎么办！"
answer = "x"
valid_from = "2026-13-01"
"#,
        );
        let errs = errors(dir.path());
        let joined = errs.join("\n");
        assert!(
            joined.contains("a.toml:4: entry \"a\" has an empty answer"),
            "{joined}"
        );
        assert!(
            joined.contains("a.toml:11: date \"2026-13-01\""),
            "{joined}"
        );
        assert!(joined.contains("a.toml:8: duplicate id \"a\""), "{joined}");
        assert!(
            joined.contains("related id \"nope\" does not exist"),
            "{joined}"
        );
    }

    #[test]
    fn same_question_under_two_entries_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.toml",
            "[[entry]]\nid = \"a\"\nquestion = \"怎么补卡\"\nanswer = \"x\"\n\n[[entry]]\nid = \"b\"\nquestion = \"怎么补卡？\"\nanswer = \"y\"\n",
        );
        let joined = errors(dir.path()).join("\n");
        assert!(
            joined.contains("also a question of entry \"a\""),
            "{joined}"
        );
    }

    #[test]
    fn toml_syntax_and_unknown_fields_are_located() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.toml",
            "[[entry]]\nid = \"a\"\nquestion = \"q\"\nanswr = \"typo\"\n",
        );
        let joined = errors(dir.path()).join("\n");
        assert!(
            joined.contains("a.toml:4: invalid TOML: unknown field `answr`"),
            "{joined}"
        );
        write(dir.path(), "a.toml", "[[entry]]\nid = \"a\nquestion = 1\n");
        let joined = errors(dir.path()).join("\n");
        assert!(joined.contains("a.toml:2: invalid TOML"), "{joined}");
    }

    #[test]
    fn csv_with_bom_crlf_chinese_headers_and_quotes() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.csv",
            "\u{feff}编号,分类,标准问题,相似问法,答案\r\nx1,网点,网点几点开门,营业时间|几点上班,\"工作日 9:00-17:00, 周末 9:00-16:00\"\r\n",
        );
        let kb = KnowledgeBase::load_dir(dir.path()).unwrap();
        let e = &kb.entries()[0];
        assert_eq!(e.similar, vec!["营业时间", "几点上班"]);
        assert!(e.answer.contains("周末"));
        assert_eq!(e.location.line, 2);
    }

    #[test]
    fn csv_problems_have_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.csv",
            "id,question,answer,valid_until,colour\nx,q,a,2026-01-01,red\n",
        );
        let joined = errors(dir.path()).join("\n");
        assert!(
            joined.contains("a.csv:1:5: unknown column \"colour\""),
            "{joined}"
        );
        write(
            dir.path(),
            "a.csv",
            "id,question,answer\nx,q\ny,q2,,\nz,q3,\n",
        );
        let joined = errors(dir.path()).join("\n");
        assert!(
            joined.contains("a.csv:2: row has 2 fields but the header has 3"),
            "{joined}"
        );
        assert!(
            joined.contains("a.csv:4:3: entry \"z\" has an empty answer"),
            "{joined}"
        );
        write(dir.path(), "a.csv", "question,answer\nq,a\n");
        assert!(errors(dir.path())
            .join("\n")
            .contains("missing required column \"id\""));
    }

    #[test]
    fn out_of_scope_words_load_normalized_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", GOOD);
        write(dir.path(), OUT_OF_SCOPE, "# 他行产品\n花唄\n\n白条\n");
        let kb = KnowledgeBase::load_dir(dir.path()).unwrap();
        // Traditional script is stored as the simplified search form, like messages.
        assert_eq!(kb.out_of_scope(), ["花呗", "白条"]);
        write(dir.path(), OUT_OF_SCOPE, "花呗\n微信 零钱\n花呗\n");
        let joined = errors(dir.path()).join("\n");
        assert!(
            joined.contains("outofscope.txt:2: an out-of-scope line"),
            "{joined}"
        );
        assert!(
            joined.contains("outofscope.txt:3: \"花呗\" is already listed on line 1"),
            "{joined}"
        );
    }

    #[test]
    fn product_groups_load_normalized_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", GOOD);
        write(dir.path(), PRODUCTS, "# 产品\n信用卡 貸記卡\n\n房贷 月供\n");
        let kb = KnowledgeBase::load_dir(dir.path()).unwrap();
        assert_eq!(
            kb.products(),
            [vec!["信用卡", "贷记卡"], vec!["房贷", "月供"]]
        );
        assert_eq!(kb.summary().products, 2);
        write(
            dir.path(),
            PRODUCTS,
            "信用卡 贷记卡\n房贷 信用卡\n车贷 e-cny\n",
        );
        let joined = errors(dir.path()).join("\n");
        assert!(
            joined.contains("products.txt:2: \"信用卡\" already names the product on line 1"),
            "{joined}"
        );
        assert!(
            joined.contains("products.txt:3: \"e-cny\": write a product word without punctuation"),
            "{joined}"
        );
    }

    #[test]
    fn a_similar_question_about_another_product_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            PRODUCTS,
            "贷款\n消费贷 < 贷款\n车贷 < 贷款\n信用卡\n",
        );
        // The entry (its id on line 3): its standard question names 消费贷 only, so a customer who
        // asks the car-loan question is never answered with it.
        write(
            dir.path(),
            "a.toml",
            "\n[[entry]]\nid = \"early\"\nquestion = \"消费贷可以提前还吗\"\nsimilar = [\"贷款能提前还吗\", \"车贷能提前还清吗\", \"提前还款利息怎么算\"]\nanswer = \"可以。\"\n",
        );
        let found = errors(dir.path());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("a.toml:3: entry \"early\": similar question \"车贷能提前还清吗\" names 车贷 but the standard question \"消费贷可以提前还吗\" names only 消费贷"),
            "{found:?}"
        );
        // Naming both products in the standard question makes every question reachable;
        // a question about the parent product (贷款) and one naming none always were.
        write(
            dir.path(),
            "a.toml",
            "[[entry]]\nid = \"early\"\nquestion = \"消费贷、车贷可以提前还吗\"\nsimilar = [\"贷款能提前还吗\", \"车贷能提前还清吗\", \"提前还款利息怎么算\"]\nanswer = \"可以。\"\n",
        );
        assert!(KnowledgeBase::load_dir(dir.path()).is_ok());
    }

    #[test]
    fn overlapping_entries_are_read_and_a_stale_id_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.toml",
            "[[entry]]\nid = \"grace\"\nquestion = \"还款宽限期有几天\"\nanswer = \"三天。\"\n\n[[entry]]\nid = \"overdue\"\nquestion = \"信用卡逾期有什么后果\"\nanswer = \"罚息和征信。\"\n\n[[entry]]\nid = \"lost\"\nquestion = \"卡丢了怎么办\"\nanswer = \"挂失。\"\n",
        );
        write(dir.path(), OVERLAPS, "# 注释\ngrace overdue\n");
        let kb = KnowledgeBase::load_dir(dir.path()).unwrap();
        let index = |id: &str| kb.index_of(id).unwrap();
        let (grace, overdue, lost) = (index("grace"), index("overdue"), index("lost"));
        assert!(kb.overlap(grace, overdue) && kb.overlap(overdue, grace));
        assert!(!kb.overlap(grace, lost));
        assert_eq!(kb.summary().overlaps, 1);

        // A line with one id and an entry renamed since (or a typo) are reported together,
        // each with its line.
        write(
            dir.path(),
            OVERLAPS,
            "grace overdue\nlost lost\ngrace overdu\n",
        );
        let found = errors(dir.path());
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found
                .iter()
                .any(|e| e.contains("overlaps.txt:2")
                    && e.contains("two or more different entry ids")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|e| e.contains("overlaps.txt:3")
                && e.contains("\"overdu\" is not the id of any entry")),
            "{found:?}"
        );
    }

    #[test]
    fn a_product_can_be_a_kind_of_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", GOOD);
        write(
            dir.path(),
            PRODUCTS,
            "信用卡\n贷款 月供\n房贷 按揭 房屋贷款 < 贷款\n车贷 ＜ 月供\n",
        );
        let kb = KnowledgeBase::load_dir(dir.path()).unwrap();
        assert_eq!(kb.product_parent(0), None);
        assert_eq!(kb.product_parent(1), None);
        assert_eq!(kb.product_parent(2), Some(1));
        // Any word of the earlier line names it, after a full-width ＜ too.
        assert_eq!(kb.product_parent(3), Some(1));
        // 房屋贷款 names 贷款 too; the most specific product is what the message means.
        assert_eq!(kb.products_named("房屋贷款能提前还吗"), vec![2]);
        assert_eq!(kb.products_named("贷款能提前还吗"), vec![1]);
        assert_eq!(kb.products_named("信用卡还房贷"), vec![0, 2]);
        // A kind agrees with its parent both ways; siblings and strangers do not.
        assert!(kb.products_agree(2, 1) && kb.products_agree(1, 2));
        assert!(kb.products_agree(2, 2));
        assert!(!kb.products_agree(2, 3) && !kb.products_agree(3, 2));
        assert!(!kb.products_agree(0, 1));

        write(
            dir.path(),
            PRODUCTS,
            "房贷 < 贷款\n贷款\n车贷 < 贷款 信用卡\n< 贷款\n经营贷 <\n",
        );
        let joined = errors(dir.path()).join("\n");
        assert!(
            joined.contains(
                "products.txt:1: \"< 贷款\": the product after < must be a word of an earlier line"
            ),
            "{joined}"
        );
        assert!(
            joined.contains("products.txt:3: write exactly one product word after <"),
            "{joined}"
        );
        assert!(
            joined.contains("products.txt:4: name the product before <"),
            "{joined}"
        );
        assert!(
            joined.contains("products.txt:5: write exactly one product word after <"),
            "{joined}"
        );
    }

    #[test]
    fn oversized_and_unknown_files_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", GOOD);
        write(dir.path(), "notes.docx", "x");
        assert!(errors(dir.path())
            .join("\n")
            .contains("notes.docx:1: unknown file type"));
        std::fs::remove_file(dir.path().join("notes.docx")).unwrap();
        let big = std::fs::File::create(dir.path().join("big.csv")).unwrap();
        big.set_len(100 * 1024 * 1024).unwrap();
        let joined = errors(dir.path()).join("\n");
        assert!(joined.contains("big.csv:1: file is 100.0 MiB"), "{joined}");
    }

    #[test]
    fn expiry_and_scope() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", GOOD);
        let kb = KnowledgeBase::load_dir(dir.path()).unwrap();
        let b = &kb.entries()[1];
        assert!(b.is_active(parse_date("2030-01-01").unwrap()));
        assert!(!b.is_active(parse_date("2030-01-02").unwrap()));
        let branch = Entry {
            scope: Scope::Branch("0571".into()),
            ..b.clone()
        };
        assert!(branch.visible_to(Some("0571")));
        assert!(!branch.visible_to(None));
        assert!(!branch.visible_to(Some("0755")));
    }

    #[test]
    fn userdict_and_synonym_errors() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", GOOD);
        write(dir.path(), USERDICT, "掌上银行 3000 n\n网点 many n\n");
        write(dir.path(), SYNONYMS, "还款 还钱\n贷款 借钱 还钱\n孤单\n");
        let joined = errors(dir.path()).join("\n");
        assert!(joined.contains("userdict.txt:2"), "{joined}");
        assert!(
            joined.contains("synonyms.txt:2: \"还钱\" is already in the group on line 1"),
            "{joined}"
        );
        assert!(joined.contains("synonyms.txt:3"), "{joined}");
    }
}
