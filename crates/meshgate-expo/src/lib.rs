//! Zero-copy parser for the Prometheus text exposition format 0.0.4 and the OpenMetrics text format.
//!
//! The entry point is [`parse`]: it walks a whole scraped page once, line by line, and hands every
//! wanted sample to a callback as a [`Sample`] that borrows its name and label text from the page.
//! Nothing is allocated per sample; label values that contain escapes are decoded lazily, and only
//! when [`Labels::iter`] or [`Labels::get`] reaches them.
//!
//! Lines whose metric name is not wanted by the [`FamilyFilter`] are skipped right after the name
//! and are **not validated** further: a malformed label set or value on a skipped line produces no
//! error. Wanted lines are validated in full; a malformed one is recorded in
//! [`ParseReport::errors`] and parsing resumes at the next line.
//!
//! Format notes:
//! - `# TYPE` lines declare families; `# HELP`, `# UNIT` and other comments are ignored; `# EOF`
//!   (OpenMetrics) ends the page.
//! - A family may reappear later in the page (old Envoy did this): its samples still arrive, with the
//!   kind of the `# TYPE` seen for that family anywhere earlier in the page.
//! - Timestamps without a `.` or exponent are integer milliseconds (0.0.4); timestamps with a
//!   fraction or exponent are OpenMetrics float seconds and are converted to milliseconds. An
//!   OpenMetrics integer timestamp (seconds) is therefore read as milliseconds: the text alone
//!   cannot tell the two apart.
//! - Exemplars (` # {labels} value [ts]` after the value or timestamp) are skipped unvalidated.
//! - Not checked: duplicate label names within one sample, and UTF-8 quoted metric names
//!   (Prometheus 3 `{"my.metric"}` syntax), which are reported as an invalid metric name.

use std::borrow::Cow;
use std::collections::HashMap as StdHashMap;
use std::collections::HashSet as StdHashSet;

/// Maps keyed by text from the page: foldhash, seeded per process.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = StdHashSet<K, foldhash::fast::RandomState>;
use std::fmt::Write as _;

use memchr::memchr;

mod scan;

use scan::{find_byte, find_either, is_label_start, is_name_char, is_name_start, name_end, Quotes};

/// Metric type from `# TYPE`.
///
/// OpenMetrics types map as follows: `unknown` → [`MetricType::Untyped`], `gaugehistogram` →
/// [`MetricType::Histogram`], `info` and `stateset` → [`MetricType::Gauge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// `counter`.
    Counter,
    /// `gauge`, and OpenMetrics `info` and `stateset`.
    Gauge,
    /// `histogram`, and OpenMetrics `gaugehistogram`.
    Histogram,
    /// `summary`.
    Summary,
    /// `untyped`, OpenMetrics `unknown`, or no `# TYPE` seen for the family.
    Untyped,
}

/// The most errors kept in [`ParseReport::errors`]; later ones are only counted.
pub const MAX_KEPT_ERRORS: usize = 64;

// Suffix bits: which sample-name suffixes a declared family owns.
const SUF_BUCKET: u8 = 1;
const SUF_COUNT: u8 = 1 << 1;
const SUF_SUM: u8 = 1 << 2;
const SUF_TOTAL: u8 = 1 << 3;
const SUF_CREATED: u8 = 1 << 4;
const SUF_GCOUNT: u8 = 1 << 5;
const SUF_GSUM: u8 = 1 << 6;
const SUF_INFO: u8 = 1 << 7;

/// Every suffix that may tie a sample name to its family, with its bit.
const SUFFIXES: [(&str, u8); 8] = [
    ("_bucket", SUF_BUCKET),
    ("_count", SUF_COUNT),
    ("_sum", SUF_SUM),
    ("_total", SUF_TOTAL),
    ("_created", SUF_CREATED),
    ("_gcount", SUF_GCOUNT),
    ("_gsum", SUF_GSUM),
    ("_info", SUF_INFO),
];

/// A family declared by `# TYPE`: its kind and the suffixes its samples may carry.
#[derive(Debug, Clone, Copy)]
struct Decl {
    kind: MetricType,
    suffixes: u8,
}

impl Decl {
    fn from_type_word(word: &str) -> Option<Decl> {
        let (kind, suffixes) = match word {
            "counter" => (MetricType::Counter, SUF_TOTAL | SUF_CREATED),
            "gauge" => (MetricType::Gauge, 0),
            "histogram" => (
                MetricType::Histogram,
                SUF_BUCKET | SUF_COUNT | SUF_SUM | SUF_CREATED,
            ),
            "gaugehistogram" => (MetricType::Histogram, SUF_BUCKET | SUF_GCOUNT | SUF_GSUM),
            "summary" => (MetricType::Summary, SUF_COUNT | SUF_SUM | SUF_CREATED),
            "untyped" | "unknown" => (MetricType::Untyped, 0),
            "info" => (MetricType::Gauge, SUF_INFO),
            "stateset" => (MetricType::Gauge, 0),
            _ => return None,
        };
        Some(Decl { kind, suffixes })
    }
}

/// Which families to materialise. A family name matches its own samples and, for
/// histograms/summaries, `<name>_bucket`, `<name>_count`, `<name>_sum` (and OpenMetrics `_total`,
/// `_created`, `_gcount`, `_gsum`, `_info`).
///
/// Inside [`parse`] the match uses the page's `# TYPE` lines: a suffixed sample name is tied to a
/// shorter family name only if that family was declared with a type that owns the suffix, or was
/// not declared at all. So on an Envoy page that declares both `envoy_cluster_upstream_rq` and
/// `envoy_cluster_upstream_rq_total` as counters, the filter `["envoy_cluster_upstream_rq"]` takes
/// only the former. A 0.0.4 counter declared as `foo_total` is also matched by the OpenMetrics
/// family name `foo` unless `foo` is itself declared.
#[derive(Debug, Clone)]
pub struct FamilyFilter {
    all: bool,
    names: HashSet<String>,
}

impl FamilyFilter {
    /// A filter that wants every sample.
    pub fn all() -> Self {
        FamilyFilter {
            all: true,
            names: HashSet::default(),
        }
    }

    /// A filter that wants the samples of the named families (an empty list wants nothing).
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(families: I) -> Self {
        FamilyFilter {
            all: false,
            names: families.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether this filter wants every sample.
    pub fn is_all(&self) -> bool {
        self.all
    }

    /// Whether a sample with this metric name is wanted, judged from the name alone: the name
    /// itself is a wanted family, or it is a wanted family plus one of the family suffixes.
    pub fn wants_sample_name(&self, name: &str) -> bool {
        self.all
            || self.names.contains(name)
            || SUFFIXES.iter().any(|(suffix, _)| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| self.names.contains(base))
            })
    }

    /// The page-aware decision used by [`parse`] (see the type's documentation).
    fn decide(
        &self,
        name: &str,
        resolved: Option<(&str, Decl)>,
        types: &HashMap<&str, Decl>,
    ) -> bool {
        if self.all || self.names.contains(name) {
            return true;
        }
        match resolved {
            Some((family, _)) if family.len() != name.len() => self.names.contains(family),
            Some((_, decl)) => {
                decl.kind == MetricType::Counter
                    && name
                        .strip_suffix("_total")
                        .is_some_and(|base| !types.contains_key(base) && self.names.contains(base))
            }
            None => SUFFIXES.iter().any(|(suffix, _)| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| !types.contains_key(base) && self.names.contains(base))
            }),
        }
    }
}

/// One sample, borrowing from the page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    /// The metric name as written, e.g. `istio_request_duration_milliseconds_bucket`.
    pub name: &'a str,
    /// The label set, still in its textual form.
    pub labels: Labels<'a>,
    /// The sample value.
    pub value: f64,
    /// The timestamp in milliseconds since the Unix epoch, when the line has one.
    pub timestamp_ms: Option<i64>,
    /// The type from the `# TYPE` of the sample's family, looked up by family name even when the
    /// family reappears later in the page; [`MetricType::Untyped`] when none was seen before.
    pub kind: MetricType,
}

/// The validated text between `{` and `}` (may be empty). Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Labels<'a> {
    raw: &'a str,
    shape: Shape,
}

/// What validation learnt about label text, to let iteration take shortcuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
struct Shape {
    /// Some value holds an escape (a backslash).
    escaped: bool,
    /// No blank outside the values (validated by `scan::plain_label_set`): each label is
    /// `name="value"` and a comma or the end follows.
    plain: bool,
}

impl<'a> Labels<'a> {
    /// The exact text between the braces (empty when the line has no braces): a stable per-target
    /// series key.
    #[inline]
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// The labels in page order as `(name, value)`, with escapes (`\\`, `\"`, `\n`) decoded; the
    /// value is borrowed from the page unless it contains an escape.
    #[inline]
    pub fn iter(&self) -> LabelIter<'a> {
        LabelIter {
            rest: self.raw,
            shape: self.shape,
            pos: 0,
            quotes: Quotes::new(),
        }
    }

    /// The decoded value of the first label called `name`.
    #[inline]
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        if self.shape.plain && !self.shape.escaped {
            return self.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
        }
        let mut rest = self.raw;
        while let Some(pair) = next_raw_label(&mut rest, self.shape) {
            if pair.name == name {
                return Some(pair.decoded());
            }
        }
        None
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.raw.bytes().all(is_blank)
    }

    /// The number of labels.
    pub fn len(&self) -> usize {
        if self.shape.plain && !self.shape.escaped {
            return self.iter().count();
        }
        let mut rest = self.raw;
        let mut n = 0;
        while next_raw_label(&mut rest, self.shape).is_some() {
            n += 1;
        }
        n
    }
}

impl<'a> IntoIterator for Labels<'a> {
    type Item = (&'a str, Cow<'a, str>);
    type IntoIter = LabelIter<'a>;

    #[inline]
    fn into_iter(self) -> LabelIter<'a> {
        self.iter()
    }
}

/// Iterator over the labels of a [`Labels`], see [`Labels::iter`].
#[derive(Debug, Clone)]
pub struct LabelIter<'a> {
    /// What is left of the label text; for a plain set, all of it.
    rest: &'a str,
    shape: Shape,
    /// For a plain set: where the next label's name starts.
    pos: usize,
    /// For a plain set: the quotes not yet passed.
    quotes: Quotes,
}

impl<'a> Iterator for LabelIter<'a> {
    type Item = (&'a str, Cow<'a, str>);

    /// The common set, plain and without escapes, is read here, inline in the caller's loop (a
    /// call per label returning its 40 bytes was a third of the parse bench); the others out
    /// of line.
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.shape.plain && !self.shape.escaped {
            return self.next_plain_unescaped();
        }
        self.next_other()
    }
}

impl<'a> LabelIter<'a> {
    /// A plain set without escapes is `name="value"` separated by commas: each label is the
    /// text up to the `=` before its next quote, and its value runs to the quote after.
    #[inline(always)]
    fn next_plain_unescaped(&mut self) -> Option<(&'a str, Cow<'a, str>)> {
        let text = self.rest;
        let b = text.as_bytes();
        if let Some(open) = self.quotes.next(b) {
            if let Some(close) = self.quotes.next(b) {
                if let (Some(name), Some(value)) = (
                    text.get(self.pos..open.wrapping_sub(1)),
                    text.get(open + 1..close),
                ) {
                    self.pos = close + 2;
                    return Some((name, Cow::Borrowed(value)));
                }
            }
        }
        self.quotes = Quotes::done(b.len());
        None
    }

    /// A set with escapes or blanks.
    #[inline]
    fn next_other(&mut self) -> Option<(&'a str, Cow<'a, str>)> {
        if !self.shape.plain {
            return next_raw_label(&mut self.rest, self.shape)
                .map(|pair| (pair.name, pair.decoded()));
        }
        let text = self.rest;
        let b = text.as_bytes();
        // Names hold no quote and no backslash: the first quote opens the value, which ends
        // at the next quote not escaped, and the value holds an escape if a backslash lies
        // between them.
        let label = self.quotes.next_unescaped(b).and_then(|(open, _)| {
            let (close, escaped) = self.quotes.next_unescaped(b)?;
            let name = text.get(self.pos..open.checked_sub(1)?)?;
            let value = RawLabel {
                name,
                value: text.get(open + 1..close)?,
                escaped,
            };
            Some((name, value.decoded(), close + 2))
        });
        match label {
            Some((name, value, next)) => {
                self.pos = next;
                Some((name, value))
            }
            None => {
                self.quotes = Quotes::done(b.len());
                None
            }
        }
    }
}

/// One label as found in validated label text: the value still escaped.
struct RawLabel<'a> {
    name: &'a str,
    value: &'a str,
    escaped: bool,
}

impl<'a> RawLabel<'a> {
    #[inline]
    fn decoded(&self) -> Cow<'a, str> {
        if self.escaped {
            Cow::Owned(unescape(self.value))
        } else {
            Cow::Borrowed(self.value)
        }
    }
}

/// Reads the next `name="value"` from label text that the parser has validated, and advances
/// `rest` past it and its comma; `shape` says whether to expect escapes. Returns `None` at the
/// end (or, defensively, on anything unexpected, after which it stays at the end).
#[inline(always)]
fn next_raw_label<'a>(rest: &mut &'a str, shape: Shape) -> Option<RawLabel<'a>> {
    let text = *rest;
    let b = text.as_bytes();
    let name_start = skip_blanks(b, 0);
    // Validated names hold no `=`, so the first one ends the name.
    let Some(eq) = find_byte(b, name_start, b'=') else {
        *rest = "";
        return None;
    };
    let quote = skip_blanks(b, eq + 1);
    let mut name_end = eq;
    while name_end > name_start && is_blank(b[name_end - 1]) {
        name_end -= 1;
    }
    if name_end == name_start || b.get(quote) != Some(&b'"') {
        *rest = "";
        return None;
    }
    let value_start = quote + 1;
    let mut value_escaped = false;
    let value_end = if shape.escaped {
        let mut j = value_start;
        loop {
            match find_either(b, j, b'"', b'\\') {
                Some(k) if b[k] == b'"' => break Some(k),
                Some(k) => {
                    value_escaped = true;
                    j = k + 2;
                }
                None => break None,
            }
        }
    } else {
        find_byte(b, value_start, b'"')
    };
    let Some(value_end) = value_end else {
        *rest = "";
        return None;
    };
    let mut i = skip_blanks(b, value_end + 1);
    if b.get(i) == Some(&b',') {
        i += 1;
    }
    let (Some(name), Some(value), Some(tail)) = (
        text.get(name_start..name_end),
        text.get(value_start..value_end),
        text.get(i..),
    ) else {
        *rest = "";
        return None;
    };
    *rest = tail;
    Some(RawLabel {
        name,
        value,
        escaped: value_escaped,
    })
}

/// Decodes `\\`, `\"` and `\n` (a lone or unknown escape is kept as written), copying the
/// text between backslashes whole.
fn unescape(value: &str) -> String {
    let b = value.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(k) = find_byte(b, i, b'\\') {
        out.extend_from_slice(&b[i..k]);
        match b.get(k + 1) {
            Some(b'n') => {
                out.push(b'\n');
                i = k + 2;
            }
            Some(&c @ (b'\\' | b'"')) => {
                out.push(c);
                i = k + 2;
            }
            // Kept as written; the byte after it is not a backslash, so it is copied next.
            _ => {
                out.push(b'\\');
                i = k + 1;
            }
        }
    }
    out.extend_from_slice(&b[i..]);
    // Only ASCII bytes were replaced or dropped, so the text is still UTF-8; the check is
    // cheap next to the copy and keeps this free of `unsafe`.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// What [`parse`] found besides the samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParseReport {
    /// Samples delivered to the callback.
    pub samples: usize,
    /// Sample lines filtered out by the [`FamilyFilter`] (not validated).
    pub skipped: usize,
    /// The first [`MAX_KEPT_ERRORS`] errors, in page order.
    pub errors: Vec<ParseError>,
    /// All errors, including those not kept.
    pub error_count: usize,
    /// Distinct families declared by `# TYPE` lines.
    pub families: usize,
    /// Whether the page ended with an OpenMetrics `# EOF` line.
    pub eof_marker: bool,
}

/// A malformed line: where, and what is wrong.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("line {line}, column {column}: {kind}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based byte column in the line.
    pub column: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// What is wrong with a malformed line.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ParseErrorKind {
    /// The metric name is empty or contains a character outside `[a-zA-Z0-9_:]`.
    #[error("invalid metric name")]
    InvalidMetricName,
    /// A label name is empty or contains a character outside `[a-zA-Z0-9_]`.
    #[error("invalid label name")]
    InvalidLabelName,
    /// A label name is not followed by `=`.
    #[error("expected '=' after label name")]
    ExpectedEquals,
    /// A label's `=` is not followed by a double quote.
    #[error("expected '\"' to start label value")]
    ExpectedQuote,
    /// A backslash in a label value is followed by something other than `\`, `"` or `n`.
    #[error("invalid escape \\{0} in label value")]
    InvalidEscape(char),
    /// A label value's closing quote is missing.
    #[error("unterminated label value")]
    UnterminatedLabelValue,
    /// A label value is followed by something other than `,` or `}`.
    #[error("expected ',' or '}}' after label value")]
    ExpectedLabelSeparator,
    /// The line ends inside `{...}`.
    #[error("unterminated label set")]
    UnterminatedLabelSet,
    /// The line ends before the value.
    #[error("missing value")]
    MissingValue,
    /// The value is not a float, `NaN` or an infinity (the text is kept, cut to 64 bytes).
    #[error("invalid value \"{0}\"")]
    InvalidValue(String),
    /// The timestamp is neither integer milliseconds nor finite float seconds.
    #[error("invalid timestamp")]
    InvalidTimestamp,
    /// Something other than an exemplar follows the timestamp.
    #[error("unexpected text after timestamp")]
    TrailingText,
    /// A `# TYPE` line has no type.
    #[error("missing metric type")]
    MissingMetricType,
    /// A `# TYPE` line names an unknown type (the text is kept, cut to 64 bytes).
    #[error("unknown metric type \"{0}\"")]
    UnknownMetricType(String),
}

/// Parse a whole page, calling `on_sample` for each wanted sample in page order. Never panics; a
/// malformed line is recorded and skipped, the rest of the page is still parsed.
pub fn parse<'a>(
    page: &'a str,
    filter: &FamilyFilter,
    mut on_sample: impl FnMut(Sample<'a>),
) -> ParseReport {
    parse_split(page, filter, None, |s, wanted| {
        if wanted.main {
            on_sample(s)
        }
    })
}

/// Which of the two filters of [`parse_split`] wanted a sample (at least one did).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// The main filter wants it.
    pub main: bool,
    /// The extra filter wants it.
    pub extra: bool,
}

/// One pass over a page for two consumers: `on_sample` gets every sample wanted by `filter` or
/// by `extra`, with which of them wanted it. The report counts as [`parse`] with `filter` alone
/// (`samples` and `skipped` are about the main filter), except that malformed lines of families
/// only `extra` wants are errors too.
pub fn parse_split<'a>(
    page: &'a str,
    filter: &FamilyFilter,
    extra: Option<&FamilyFilter>,
    mut on_sample: impl FnMut(Sample<'a>, Wanted),
) -> ParseReport {
    let mut parser = Parser {
        filter,
        extra,
        types: HashMap::with_capacity_and_hasher(64, Default::default()),
        cache: None,
        wanted: Wanted {
            main: false,
            extra: false,
        },
        report: ParseReport::default(),
    };
    let bytes = page.as_bytes();
    let mut pos = 0;
    let mut line_no = 0;
    while pos < bytes.len() {
        line_no += 1;
        let end = memchr(b'\n', &bytes[pos..]).map_or(bytes.len(), |k| pos + k);
        let mut line_end = end;
        if line_end > pos && bytes[line_end - 1] == b'\r' {
            line_end -= 1;
        }
        // `pos` and `line_end` sit next to ASCII bytes, so they are char boundaries.
        let line = page.get(pos..line_end).unwrap_or("");
        pos = end + 1;
        match parser.line(line) {
            Ok(Some(sample)) => {
                let wanted = parser.wanted;
                if wanted.main {
                    parser.report.samples += 1;
                } else {
                    parser.report.skipped += 1;
                }
                on_sample(sample, wanted);
            }
            Ok(None) => {}
            Err(Stop::Eof) => {
                parser.report.eof_marker = true;
                break;
            }
            Err(Stop::Error(at, kind)) => parser.error(line_no, at, kind),
        }
    }
    parser.report.families = parser.types.len();
    parser.report
}

/// Why a line produced no sample, other than being a comment or skipped.
enum Stop {
    /// `# EOF`.
    Eof,
    /// A malformed line: byte offset in the line, and what is wrong.
    Error(usize, ParseErrorKind),
}

struct Parser<'a, 'f> {
    filter: &'f FamilyFilter,
    /// A second consumer's filter ([`parse_split`]).
    extra: Option<&'f FamilyFilter>,
    types: HashMap<&'a str, Decl>,
    /// The last classified metric name, with its kind and who wants it.
    cache: Option<(&'a str, MetricType, Wanted)>,
    /// Who wanted the sample just returned by `sample`.
    wanted: Wanted,
    report: ParseReport,
}

impl<'a> Parser<'a, '_> {
    fn error(&mut self, line: usize, at: usize, kind: ParseErrorKind) {
        self.report.error_count += 1;
        if self.report.errors.len() < MAX_KEPT_ERRORS {
            self.report.errors.push(ParseError {
                line,
                column: at + 1,
                kind,
            });
        }
    }

    /// The kind of a metric name and who wants it.
    #[inline]
    fn classify(&mut self, name: &'a str) -> (MetricType, Wanted) {
        if let Some((cached, kind, wanted)) = self.cache {
            if cached == name {
                return (kind, wanted);
            }
        }
        let resolved = self.resolve(name);
        let kind = resolved.map_or(MetricType::Untyped, |(_, decl)| decl.kind);
        let wanted = Wanted {
            main: self.filter.decide(name, resolved, &self.types),
            extra: self
                .extra
                .is_some_and(|f| f.decide(name, resolved, &self.types)),
        };
        self.cache = Some((name, kind, wanted));
        (kind, wanted)
    }

    /// The declared family of a sample name: the name itself, or the name less a suffix that the
    /// shorter family's type owns.
    fn resolve(&self, name: &'a str) -> Option<(&'a str, Decl)> {
        if let Some((family, decl)) = self.types.get_key_value(name) {
            return Some((*family, *decl));
        }
        for (suffix, bit) in SUFFIXES {
            if let Some(base) = name.strip_suffix(suffix) {
                if let Some((family, decl)) = self.types.get_key_value(base) {
                    if decl.suffixes & bit != 0 {
                        return Some((*family, *decl));
                    }
                }
            }
        }
        None
    }

    /// One line, without its line ending.
    #[inline]
    fn line(&mut self, line: &'a str) -> Result<Option<Sample<'a>>, Stop> {
        let b = line.as_bytes();
        let i = skip_blanks(b, 0);
        match b.get(i) {
            None => Ok(None),
            Some(b'#') => self.comment(line, i + 1).map(|()| None),
            Some(_) => self.sample(line, i),
        }
    }

    /// A comment line; `i` is just past the `#`.
    fn comment(&mut self, line: &'a str, i: usize) -> Result<(), Stop> {
        let b = line.as_bytes();
        let i = skip_blanks(b, i);
        let keyword_end = token_end(b, i);
        match &b[i..keyword_end] {
            b"TYPE" => self.type_line(line, keyword_end),
            b"EOF" if skip_blanks(b, keyword_end) == b.len() => Err(Stop::Eof),
            _ => Ok(()),
        }
    }

    /// The rest of a `# TYPE` line, from just past `TYPE`.
    fn type_line(&mut self, line: &'a str, i: usize) -> Result<(), Stop> {
        let b = line.as_bytes();
        let name_start = skip_blanks(b, i);
        let name_end = token_end(b, name_start);
        if !is_metric_name(&b[name_start..name_end]) {
            return Err(Stop::Error(name_start, ParseErrorKind::InvalidMetricName));
        }
        let type_start = skip_blanks(b, name_end);
        let mut type_end = b.len();
        while type_end > type_start && is_blank(b[type_end - 1]) {
            type_end -= 1;
        }
        if type_start == type_end {
            return Err(Stop::Error(type_start, ParseErrorKind::MissingMetricType));
        }
        let word = line.get(type_start..type_end).unwrap_or("");
        let Some(decl) = Decl::from_type_word(word) else {
            return Err(Stop::Error(
                type_start,
                ParseErrorKind::UnknownMetricType(truncated(word)),
            ));
        };
        let name = line.get(name_start..name_end).unwrap_or("");
        self.types.insert(name, decl);
        // A new declaration can change how a name resolves.
        self.cache = None;
        Ok(())
    }

    /// A sample line; `start` is its first non-blank byte.
    #[inline]
    fn sample(&mut self, line: &'a str, start: usize) -> Result<Option<Sample<'a>>, Stop> {
        let b = line.as_bytes();
        let len = b.len();
        if !is_name_start(b[start]) {
            return Err(Stop::Error(start, ParseErrorKind::InvalidMetricName));
        }
        let mut i = name_end(b, start + 1, true);
        if i < len && b[i] != b'{' && !is_blank(b[i]) {
            return Err(Stop::Error(i, ParseErrorKind::InvalidMetricName));
        }
        let name = line.get(start..i).unwrap_or("");
        let (kind, wanted) = self.classify(name);
        if !wanted.main && !wanted.extra {
            self.report.skipped += 1;
            return Ok(None);
        }
        self.wanted = wanted;

        i = skip_blanks(b, i);
        let mut raw = "";
        let mut shape = Shape::default();
        if i < len && b[i] == b'{' {
            let close =
                parse_label_set(b, i + 1, &mut shape).map_err(|(at, e)| Stop::Error(at, e))?;
            raw = line.get(i + 1..close).unwrap_or("");
            i = skip_blanks(b, close + 1);
        }
        if i == len {
            return Err(Stop::Error(i, ParseErrorKind::MissingValue));
        }

        let value_start = i;
        i = token_end(b, i);
        let value_text = line.get(value_start..i).unwrap_or("");
        let Some(value) = parse_value(value_text) else {
            return Err(Stop::Error(
                value_start,
                ParseErrorKind::InvalidValue(truncated(value_text)),
            ));
        };

        i = skip_blanks(b, i);
        let mut timestamp_ms = None;
        if i < len && b[i] != b'#' {
            let ts_start = i;
            i = token_end(b, i);
            let ts_text = line.get(ts_start..i).unwrap_or("");
            match parse_timestamp(ts_text) {
                Some(ts) => timestamp_ms = Some(ts),
                None => return Err(Stop::Error(ts_start, ParseErrorKind::InvalidTimestamp)),
            }
            i = skip_blanks(b, i);
        }
        // Anything left must be an exemplar, which is skipped.
        if i < len && b[i] != b'#' {
            return Err(Stop::Error(i, ParseErrorKind::TrailingText));
        }

        Ok(Some(Sample {
            name,
            labels: Labels { raw, shape },
            value,
            timestamp_ms,
            kind,
        }))
    }
}

/// Validates a label set starting just past `{`; returns the offset of the closing `}`, and
/// records in `shape` whether a value holds an escape.
#[inline]
fn parse_label_set(
    b: &[u8],
    i: usize,
    shape: &mut Shape,
) -> Result<usize, (usize, ParseErrorKind)> {
    if let Some((close, escaped)) = scan::plain_label_set(b, i) {
        *shape = Shape {
            escaped,
            plain: true,
        };
        return Ok(close);
    }
    exact_label_set(b, i, shape)
}

/// [`parse_label_set`] byte by byte: any label set, blanks and escapes included, and the exact
/// position and kind of an error.
fn exact_label_set(
    b: &[u8],
    mut i: usize,
    shape: &mut Shape,
) -> Result<usize, (usize, ParseErrorKind)> {
    let len = b.len();
    i = skip_blanks(b, i);
    if i < len && b[i] == b'}' {
        return Ok(i);
    }
    let mut escaped = false;
    loop {
        // Label name.
        if i >= len {
            return Err((i, ParseErrorKind::UnterminatedLabelSet));
        }
        if !is_label_start(b[i]) {
            return Err((i, ParseErrorKind::InvalidLabelName));
        }
        i = name_end(b, i + 1, false);
        if i < len && !matches!(b[i], b'=' | b' ' | b'\t' | b'}' | b',' | b'"' | b'{') {
            return Err((i, ParseErrorKind::InvalidLabelName));
        }
        i = skip_blanks(b, i);
        if i >= len || b[i] != b'=' {
            return Err((i, ParseErrorKind::ExpectedEquals));
        }
        i = skip_blanks(b, i + 1);
        if i >= len || b[i] != b'"' {
            return Err((i, ParseErrorKind::ExpectedQuote));
        }
        // Label value: find the closing quote, checking each escape on the way.
        let open = i;
        i += 1;
        loop {
            let Some(j) = find_either(b, i, b'"', b'\\') else {
                return Err((open, ParseErrorKind::UnterminatedLabelValue));
            };
            if b[j] == b'"' {
                i = j + 1;
                break;
            }
            match b.get(j + 1) {
                Some(b'\\' | b'"' | b'n') => {
                    escaped = true;
                    i = j + 2;
                }
                Some(_) => {
                    // `j + 1` follows an ASCII backslash in text that came from a `&str`, so the
                    // tail is valid UTF-8.
                    let c = std::str::from_utf8(&b[j + 1..])
                        .ok()
                        .and_then(|s| s.chars().next())
                        .unwrap_or(char::REPLACEMENT_CHARACTER);
                    return Err((j, ParseErrorKind::InvalidEscape(c)));
                }
                None => return Err((open, ParseErrorKind::UnterminatedLabelValue)),
            }
        }
        // Separator.
        i = skip_blanks(b, i);
        match b.get(i) {
            Some(b'}') => break,
            Some(b',') => {
                i = skip_blanks(b, i + 1);
                if i < len && b[i] == b'}' {
                    break;
                }
            }
            Some(_) => return Err((i, ParseErrorKind::ExpectedLabelSeparator)),
            None => return Err((i, ParseErrorKind::UnterminatedLabelSet)),
        }
    }
    shape.escaped = escaped;
    Ok(i)
}

/// Parses a sample value the way Go's `strconv.ParseFloat` does for decimal input: floats with
/// optional sign, fraction and exponent, integers of any size, `NaN` and `Inf`/`Infinity` with an
/// optional sign, case-insensitively. Out-of-range numbers (`1e400`) are rejected, as Go does.
#[inline]
fn parse_value(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    // Fast path: an unsigned integer of up to 19 digits converts exactly (u64 -> f64 rounds to
    // nearest, like the decimal parser).
    if !b.is_empty() && b.len() <= 19 && b.iter().all(u8::is_ascii_digit) {
        let mut n: u64 = 0;
        for &d in b {
            n = n * 10 + u64::from(d - b'0');
        }
        return Some(n as f64);
    }
    if let Some(v) = short_decimal(b) {
        return Some(v);
    }
    let unsigned = match b.first() {
        Some(b'+' | b'-') => &b[1..],
        _ => b,
    };
    match unsigned.first() {
        Some(c) if c.is_ascii_alphabetic() => {
            if unsigned.eq_ignore_ascii_case(b"inf") || unsigned.eq_ignore_ascii_case(b"infinity") {
                Some(if b[0] == b'-' {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                })
            } else if b.eq_ignore_ascii_case(b"nan") {
                Some(f64::NAN)
            } else {
                None
            }
        }
        // Like Go, a finite-looking number too large for an f64 is an error, not an infinity.
        Some(c) if c.is_ascii_digit() || *c == b'.' => {
            s.parse::<f64>().ok().filter(|v| v.is_finite())
        }
        _ => None,
    }
}

/// Powers of ten that an `f64` holds exactly.
const EXACT_POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// A signed decimal without exponent of at most 15 digits (`-12.5`, `0.25`, `7.`), by Clinger's
/// fast path: the digits as an integer and the power of ten are both exact in an `f64`, so the
/// one correctly rounded division gives the correctly rounded value, the one `str::parse` gives.
/// `None` for anything else (then `str::parse` decides).
#[inline]
fn short_decimal(b: &[u8]) -> Option<f64> {
    let (negative, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut count = 0;
    let mut point = None;
    for (k, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(c - b'0');
                count += 1;
            }
            b'.' if point.is_none() => point = Some(k),
            _ => return None,
        }
    }
    if count == 0 || count > 15 {
        return None;
    }
    let scale = point.map_or(0, |k| digits.len() - 1 - k);
    let v = mantissa as f64 / EXACT_POW10[scale];
    Some(if negative { -v } else { v })
}

/// Parses a timestamp: integer milliseconds, or float seconds (with a `.` or exponent), which are
/// converted to milliseconds.
fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = match b.first() {
        Some(b'+' | b'-') => &b[1..],
        _ => b,
    };
    if digits.is_empty() || !digits[0].is_ascii_digit() && digits[0] != b'.' {
        return None;
    }
    if digits.iter().all(u8::is_ascii_digit) {
        return s.parse::<i64>().ok();
    }
    let seconds = s.parse::<f64>().ok()?;
    let ms = (seconds * 1000.0).round();
    // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive.
    (ms.is_finite() && ms >= i64::MIN as f64 && ms < i64::MAX as f64).then_some(ms as i64)
}

/// The text of an error, cut to at most 64 bytes on a char boundary.
fn truncated(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Whether the whole text is a valid metric name.
fn is_metric_name(b: &[u8]) -> bool {
    match b.split_first() {
        Some((&first, rest)) => is_name_start(first) && rest.iter().all(|&c| is_name_char(c)),
        None => false,
    }
}

#[inline]
fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

#[inline]
fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_blank(b[i]) {
        i += 1;
    }
    i
}

/// The offset of the first blank at or after `i`, or the end.
#[inline]
fn token_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && !is_blank(b[i]) {
        i += 1;
    }
    i
}

/// Whether a page's end shows it arrived whole, per [`page_end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageEnd {
    /// Ends with a newline, or with an OpenMetrics `# EOF` line.
    Whole,
    /// A text-format page whose last line has no newline: cut short, its last value maybe too.
    NoFinalNewline,
    /// An OpenMetrics page whose last line is not `# EOF`, the format's only truncation signal.
    NoEof,
}

/// How `page` ends. An OpenMetrics page (`openmetrics`: served as
/// `application/openmetrics-text`) must end with its `# EOF` line (a final newline after it is
/// optional, as the format allows, and blank lines after it hold nothing), as Prometheus requires;
/// text after `# EOF` counts as no `# EOF`.
/// A 0.0.4 page has no end marker, so its final newline is the only sign that its last line is
/// complete: a page without one is not whole (Prometheus accepts it; a cut `1234` reads as `12`). A
/// page of any format whose last line is `# EOF` is whole.
pub fn page_end(page: &str, openmetrics: bool) -> PageEnd {
    // Blank lines after `# EOF` hold nothing: the page ended there, nothing is missing.
    let body = page.trim_end_matches(['\n', '\r']);
    let last = body.rsplit('\n').next().unwrap_or("");
    if last == "# EOF" {
        PageEnd::Whole
    } else if openmetrics {
        PageEnd::NoEof
    } else if !page.is_empty() && !page.ends_with('\n') {
        PageEnd::NoFinalNewline
    } else {
        PageEnd::Whole
    }
}

/// Render samples back to text (used by tests and the simulator): `name{labels} value [ts]\n`,
/// escaping label values, values formatted so that `parse(render(x)) == x` (`NaN`, `+Inf`, `-Inf`
/// included). With no labels the braces are left out.
pub fn render_sample(
    out: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    value: f64,
    timestamp_ms: Option<i64>,
) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (n, (label, label_value)) in labels.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape_into(out, label_value);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    write_value(out, value);
    if let Some(ts) = timestamp_ms {
        let _ = write!(out, " {ts}");
    }
    out.push('\n');
}

/// Appends a label value with `\`, `"` and newline escaped.
fn escape_into(out: &mut String, value: &str) {
    let mut rest = value;
    while let Some(k) = rest.find(['\\', '"', '\n']) {
        out.push_str(&rest[..k]);
        out.push_str(match rest.as_bytes()[k] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        });
        rest = &rest[k + 1..];
    }
    out.push_str(rest);
}

/// Appends a value in the shortest text that parses back to the same `f64`.
fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value == 0.0 || (1e-4..1e15).contains(&value.abs()) {
        // Plain decimal: `1`, `0.25`, `1636743449133`.
        let _ = write!(out, "{value}");
    } else {
        // Exponent form for very large or small magnitudes: `1e300`, `7.754e-5`.
        let _ = write!(out, "{value:e}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn page_end_follows_each_format_rule() {
        use super::{page_end, PageEnd};
        let om = true;
        assert_eq!(page_end("a_total 1\n# EOF\n", om), PageEnd::Whole);
        assert_eq!(
            page_end("a_total 1\n# EOF", om),
            PageEnd::Whole,
            "newline after EOF optional"
        );
        assert_eq!(page_end("a_total 1\r\n# EOF\r\n", om), PageEnd::Whole);
        assert_eq!(
            page_end("a_total 1\n# EOF\n\n\r\n", om),
            PageEnd::Whole,
            "blank lines after EOF (found by the fuzz oracle)"
        );
        assert_eq!(page_end("a_total 1\n", om), PageEnd::NoEof);
        assert_eq!(page_end("a_total 1\n# EOF\na 2\n", om), PageEnd::NoEof);
        assert_eq!(page_end("a_total 1\n# EOF and more\n", om), PageEnd::NoEof);
        assert_eq!(page_end("", om), PageEnd::NoEof);
        assert_eq!(page_end("a 1\n", false), PageEnd::Whole);
        assert_eq!(page_end("", false), PageEnd::Whole);
        assert_eq!(page_end("a 1\na 12", false), PageEnd::NoFinalNewline);
        assert_eq!(page_end("a 1\n# EOF", false), PageEnd::Whole);
    }

    use super::*;

    /// A delivered sample with everything owned, for comparisons.
    #[derive(Debug, Clone, PartialEq)]
    struct Owned {
        name: String,
        raw: String,
        labels: Vec<(String, String)>,
        value: f64,
        ts: Option<i64>,
        kind: MetricType,
    }

    fn collect_with(page: &str, filter: &FamilyFilter) -> (Vec<Owned>, ParseReport) {
        let mut out = Vec::new();
        let report = parse(page, filter, |s| {
            out.push(Owned {
                name: s.name.to_owned(),
                raw: s.labels.raw().to_owned(),
                labels: s
                    .labels
                    .iter()
                    .map(|(n, v)| (n.to_owned(), v.into_owned()))
                    .collect(),
                value: s.value,
                ts: s.timestamp_ms,
                kind: s.kind,
            })
        });
        assert_eq!(report.samples, out.len());
        (out, report)
    }

    fn collect(page: &str) -> (Vec<Owned>, ParseReport) {
        collect_with(page, &FamilyFilter::all())
    }

    /// Parses a page that must hold exactly one sample and no error.
    fn one(page: &str) -> Owned {
        let (samples, report) = collect(page);
        assert!(report.errors.is_empty(), "{page:?}: {:?}", report.errors);
        assert_eq!(samples.len(), 1, "{page:?}");
        samples.into_iter().next().unwrap()
    }

    /// Parses a page that must hold exactly one error and no sample.
    fn one_error(page: &str) -> ParseError {
        let (samples, report) = collect(page);
        assert!(samples.is_empty(), "{page:?}: {samples:?}");
        assert_eq!(report.error_count, 1, "{page:?}: {:?}", report.errors);
        report.errors.into_iter().next().unwrap()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// 1-based column of the first occurrence of `needle` in `line`.
    fn col(line: &str, needle: &str) -> usize {
        line.find(needle).unwrap() + 1
    }

    #[test]
    fn commas_braces_and_equals_inside_quoted_values() {
        let s =
            one(r#"istio_requests_total{response_flags="UF,URX",a="x}y",b="p=q{r",c=" , } = "} 7"#);
        assert_eq!(s.name, "istio_requests_total");
        assert_eq!(
            s.labels,
            pairs(&[
                ("response_flags", "UF,URX"),
                ("a", "x}y"),
                ("b", "p=q{r"),
                ("c", " , } = ")
            ])
        );
        assert_eq!(
            s.raw,
            r#"response_flags="UF,URX",a="x}y",b="p=q{r",c=" , } = ""#
        );
        assert_eq!(s.value, 7.0);
    }

    #[test]
    fn utf8_label_values() {
        let s = one("m{city=\"Zürich\",emoji=\"日本 🚀\"} 1\n");
        assert_eq!(s.labels, pairs(&[("city", "Zürich"), ("emoji", "日本 🚀")]));
    }

    #[test]
    fn each_escape_is_decoded() {
        let s = one(r#"m{bs="a\\b",q="say \"hi\"",nl="x\ny",all="\\\"\n",plain="p"} 1"#);
        assert_eq!(
            s.labels,
            pairs(&[
                ("bs", "a\\b"),
                ("q", "say \"hi\""),
                ("nl", "x\ny"),
                ("all", "\\\"\n"),
                ("plain", "p"),
            ])
        );
    }

    #[test]
    fn values_without_escapes_are_borrowed() {
        let page = r#"m{plain="abc",esc="a\"b"} 1"#;
        parse(page, &FamilyFilter::all(), |s| {
            let got: Vec<_> = s.labels.iter().collect();
            assert!(matches!(got[0].1, Cow::Borrowed("abc")));
            assert!(matches!(&got[1].1, Cow::Owned(v) if v == "a\"b"));
            assert!(matches!(s.labels.get("plain"), Some(Cow::Borrowed("abc"))));
            assert_eq!(s.labels.get("esc").as_deref(), Some("a\"b"));
            assert_eq!(s.labels.get("nope"), None);
            assert_eq!(s.labels.len(), 2);
        });
    }

    #[test]
    fn invalid_escape_reports_line_and_column() {
        let bad = r#"m{a="ok",b="x\qy"} 1"#;
        let page = format!("# TYPE m counter\n{bad}\nm{{a=\"fine\"}} 2\n");
        let (samples, report) = collect(&page);
        assert_eq!(report.error_count, 1);
        let e = &report.errors[0];
        assert_eq!(e.line, 2);
        assert_eq!(e.column, col(bad, r"\q"));
        assert_eq!(e.kind, ParseErrorKind::InvalidEscape('q'));
        assert_eq!(
            e.to_string(),
            format!(
                "line 2, column {}: invalid escape \\q in label value",
                e.column
            )
        );
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].labels, pairs(&[("a", "fine")]));
    }

    #[test]
    fn invalid_escape_of_a_multibyte_char() {
        let e = one_error("m{a=\"\\é\"} 1");
        assert_eq!(e.kind, ParseErrorKind::InvalidEscape('é'));
        assert_eq!(e.column, 6);
    }

    #[test]
    fn trailing_comma_is_accepted() {
        for page in [r#"m{a="1",} 2"#, r#"m{a="1", } 2"#, "m{a=\"1\",\t} 2"] {
            let s = one(page);
            assert_eq!(s.labels, pairs(&[("a", "1")]), "{page}");
            assert_eq!(s.value, 2.0);
        }
        // A lone comma is not a label set.
        assert_eq!(one_error("m{,} 1").kind, ParseErrorKind::InvalidLabelName);
        assert_eq!(
            one_error(r#"m{a="1",,} 1"#).kind,
            ParseErrorKind::InvalidLabelName
        );
    }

    #[test]
    fn empty_braces() {
        let s = one("envoy_cluster_manager_active_clusters{} 28");
        assert_eq!(s.raw, "");
        assert!(s.labels.is_empty());
        assert_eq!(s.value, 28.0);
        let s = one("m{ } 3");
        assert!(s.labels.is_empty());
        assert_eq!(s.raw, " ");
        parse("m{ } 3", &FamilyFilter::all(), |s| {
            assert!(s.labels.is_empty());
            assert_eq!(s.labels.len(), 0);
        });
    }

    #[test]
    fn no_labels() {
        let s = one("pilot_xds 5\n");
        assert_eq!(s.name, "pilot_xds");
        assert!(s.labels.is_empty());
        assert_eq!(s.raw, "");
        assert_eq!(s.value, 5.0);
        assert_eq!(s.ts, None);
    }

    #[test]
    fn special_values() {
        for (text, want) in [
            ("+Inf", f64::INFINITY),
            ("Inf", f64::INFINITY),
            ("inf", f64::INFINITY),
            ("+inf", f64::INFINITY),
            ("INF", f64::INFINITY),
            ("+Infinity", f64::INFINITY),
            ("-Inf", f64::NEG_INFINITY),
            ("-inf", f64::NEG_INFINITY),
            ("-infinity", f64::NEG_INFINITY),
        ] {
            assert_eq!(one(&format!("m {text}")).value, want, "{text}");
        }
        for text in ["NaN", "nan", "NAN"] {
            assert!(one(&format!("m {text}")).value.is_nan(), "{text}");
        }
        for text in ["+NaN", "-nan", "Infx", "in", "nanx"] {
            let e = one_error(&format!("m {text}"));
            assert_eq!(e.kind, ParseErrorKind::InvalidValue(text.to_owned()));
        }
    }

    #[test]
    fn integer_larger_than_i64() {
        let s = one("envoy_cluster_manager_cds_version{} 16440392441958861461");
        assert_eq!(s.value, 16440392441958861461u64 as f64);
        assert_eq!(s.value, "16440392441958861461".parse::<f64>().unwrap());
        let s = one("m 123456789012345678901234567890");
        assert_eq!(s.value, 1.2345678901234568e29);
        // The fast integer path agrees with the decimal parser at its edges.
        for text in [
            "9007199254740993",
            "9999999999999999999",
            "18446744073709551615",
        ] {
            assert_eq!(
                one(&format!("m {text}")).value,
                text.parse::<f64>().unwrap()
            );
        }
    }

    #[test]
    fn negative_fraction_and_exponent_values() {
        for (text, want) in [
            ("-1", -1.0),
            ("-0.5", -0.5),
            ("+3", 3.0),
            ("1e3", 1000.0),
            ("1E3", 1000.0),
            ("-2.5e-3", -0.0025),
            ("7.647864e+06", 7647864.0),
            (".5", 0.5),
            ("5.", 5.0),
            ("0", 0.0),
            ("-0", 0.0),
            ("1.897816015534054e-05", 1.897816015534054e-05),
        ] {
            assert_eq!(one(&format!("m {text}")).value, want, "{text}");
        }
    }

    #[test]
    fn millisecond_timestamp() {
        let s = one("m{a=\"b\"} 1 1636743449133\n");
        assert_eq!(s.ts, Some(1636743449133));
        assert_eq!(one("m 1 -5").ts, Some(-5));
        assert_eq!(one("m 1 0").ts, Some(0));
    }

    #[test]
    fn openmetrics_float_seconds_timestamp() {
        assert_eq!(one("m 1 1520879607.789").ts, Some(1520879607789));
        assert_eq!(one("m 1 1520879607.0").ts, Some(1520879607000));
        assert_eq!(one("m 1 1.5e9").ts, Some(1500000000000));
        for bad in [
            "1e400",
            "NaN",
            "+Inf",
            "12ab",
            "1.2.3",
            "99999999999999999999",
        ] {
            let e = one_error(&format!("m 1 {bad}"));
            assert_eq!(e.kind, ParseErrorKind::InvalidTimestamp, "{bad}");
            assert_eq!(e.column, 5, "{bad}");
        }
    }

    #[test]
    fn exemplars_are_skipped() {
        let page = "# TYPE foo histogram\n\
            foo_bucket{le=\"0.01\"} 0\n\
            foo_bucket{le=\"0.1\"} 8 # {trace_id=\"KOO5S4vxi0o\"} 0.067\n\
            foo_bucket{le=\"1\"} 11 # {trace_id=\"0d482-ac43e\"} 0.84 1520879607.789\n\
            foo_bucket{le=\"+Inf\"} 17 1520879607789 # {} 7\n\
            foo_count 17 #{trace_id=\"x\"} 1\n\
            # EOF\n";
        let (samples, report) = collect(page);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
        assert_eq!(values, [0.0, 8.0, 11.0, 17.0, 17.0]);
        assert_eq!(samples[3].ts, Some(1520879607789));
        assert_eq!(samples[2].ts, None);
        assert!(samples.iter().all(|s| s.kind == MetricType::Histogram));
        assert!(report.eof_marker);
    }

    #[test]
    fn eof_stops_the_page() {
        let page = "# TYPE a counter\na_total 1\n# EOF\na_total 2\ngarbage {{{\n";
        let (samples, report) = collect(page);
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].value, 1.0);
        assert!(report.eof_marker);
        assert_eq!(report.error_count, 0);
        // Also with CRLF and without a final newline.
        assert!(collect("a 1\r\n# EOF\r\n").1.eof_marker);
        assert!(collect("a 1\n# EOF").1.eof_marker);
        // `# EOF something` is only a comment.
        let (samples, report) = collect("a 1\n# EOF and more\na 2\n");
        assert_eq!(samples.len(), 2);
        assert!(!report.eof_marker);
    }

    #[test]
    fn crlf_line_endings() {
        let page = "# HELP m help\r\n# TYPE m gauge\r\nm{a=\"b\"} 1\r\nm 2 1000\r\n\r\nm 3\r\n";
        let (samples, report) = collect(page);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].labels, pairs(&[("a", "b")]));
        assert_eq!(samples[1].ts, Some(1000));
        assert_eq!(samples[2].value, 3.0);
        assert!(samples.iter().all(|s| s.kind == MetricType::Gauge));
    }

    #[test]
    fn last_line_without_newline() {
        let (samples, report) = collect("a 1\nb{x=\"y\"} 2");
        assert!(report.errors.is_empty());
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1].name, "b");
        assert_eq!(samples[1].value, 2.0);
        let (samples, _) = collect("a 1\nb 2 1234");
        assert_eq!(samples[1].ts, Some(1234));
    }

    #[test]
    fn tabs_and_spaces_around_tokens() {
        let s = one("\t m \t{ a = \"1\" ,\tb\t=\t\"2\"\t}\t 3.5 \t 42 \t");
        assert_eq!(s.name, "m");
        assert_eq!(s.labels, pairs(&[("a", "1"), ("b", "2")]));
        assert_eq!(s.value, 3.5);
        assert_eq!(s.ts, Some(42));
        // Whitespace-only lines are blank lines.
        let (samples, report) = collect(" \t \na 1\n\t\n");
        assert_eq!(samples.len(), 1);
        assert!(report.errors.is_empty());
    }

    #[test]
    fn malformed_line_does_not_poison_the_next_lines() {
        let page = "# TYPE m counter\n\
            m{a=\"1\"} 1\n\
            m{a=\"2\" 2\n\
            m{a=\"3\"} 3\n\
            m{a=\"4\"} 4\n";
        let (samples, report) = collect(page);
        assert_eq!(report.error_count, 1);
        assert_eq!(report.errors[0].line, 3);
        assert_eq!(report.errors[0].column, 9);
        assert_eq!(
            report.errors[0].kind,
            ParseErrorKind::ExpectedLabelSeparator
        );
        let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
        assert_eq!(values, [1.0, 3.0, 4.0]);
        assert!(samples.iter().all(|s| s.kind == MetricType::Counter));
        assert_eq!(samples[1].labels, pairs(&[("a", "3")]));
    }

    #[test]
    fn unterminated_quote() {
        let line = r#"m{a="1",b="oops} 2"#;
        let (samples, report) = collect(&format!("ok 1\n{line}\n"));
        assert_eq!(samples.len(), 1);
        assert_eq!(report.error_count, 1);
        let e = &report.errors[0];
        assert_eq!(e.kind, ParseErrorKind::UnterminatedLabelValue);
        assert_eq!(e.line, 2);
        assert_eq!(e.column, col(line, "\"oops"));
        // A backslash right before the end of the line does not close the value either.
        let e = one_error("m{a=\"x\\");
        assert_eq!(e.kind, ParseErrorKind::UnterminatedLabelValue);
        // And the quote does not run on into the next line.
        let (samples, report) = collect("m{a=\"x\n\"} 1\nn 2\n");
        assert_eq!(report.error_count, 2);
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].name, "n");
    }

    #[test]
    fn missing_value() {
        for (page, column) in [
            ("m", 2),
            ("m{a=\"b\"}", 9),
            ("m{a=\"b\"}   ", 12),
            ("m  ", 4),
        ] {
            let e = one_error(page);
            assert_eq!(e.kind, ParseErrorKind::MissingValue, "{page:?}");
            assert_eq!(e.column, column, "{page:?}");
            assert_eq!(
                e.to_string(),
                format!("line 1, column {column}: missing value")
            );
        }
    }

    #[test]
    fn garbage_value() {
        let e = one_error("m{a=\"b\"} abc");
        assert_eq!(e.kind, ParseErrorKind::InvalidValue("abc".into()));
        assert_eq!(e.column, 10);
        assert_eq!(e.to_string(), "line 1, column 10: invalid value \"abc\"");
        for bad in [
            "1,5", "0x10", "1_000", "1e", "--1", "#", "1e400", "-1e400", "+-1", "١",
        ] {
            let e = one_error(&format!("m {bad}"));
            assert_eq!(e.kind, ParseErrorKind::InvalidValue(bad.into()), "{bad}");
            assert_eq!(e.column, 3, "{bad}");
        }
        // Long garbage is cut in the error.
        let long = "z".repeat(200);
        let e = one_error(&format!("m {long}"));
        assert_eq!(e.kind, ParseErrorKind::InvalidValue("z".repeat(64)));
        // Trailing text after the timestamp.
        let e = one_error("m 1 2 3");
        assert_eq!(e.kind, ParseErrorKind::TrailingText);
        assert_eq!(e.column, 7);
    }

    #[test]
    fn invalid_metric_names() {
        for (line, column) in [
            ("1abc 1", 1),
            ("foo-bar 1", 4),
            ("foo.bar{} 1", 4),
            ("{a=\"b\"} 1", 1),
            ("\"quoted\" 1", 1),
            ("  é 1", 3),
        ] {
            let e = one_error(line);
            assert_eq!(e.kind, ParseErrorKind::InvalidMetricName, "{line}");
            assert_eq!(e.column, column, "{line}");
        }
        // Colons are valid in metric names.
        assert_eq!(one("job:rate5m:sum 1").name, "job:rate5m:sum");
    }

    #[test]
    fn label_names_with_invalid_chars() {
        for (line, column, kind) in [
            (r#"m{a-b="1"} 1"#, 4, ParseErrorKind::InvalidLabelName),
            (r#"m{1a="1"} 1"#, 3, ParseErrorKind::InvalidLabelName),
            (r#"m{a:b="1"} 1"#, 4, ParseErrorKind::InvalidLabelName),
            (r#"m{é="1"} 1"#, 3, ParseErrorKind::InvalidLabelName),
            (r#"m{a.b="1"} 1"#, 4, ParseErrorKind::InvalidLabelName),
            (r#"m{a b="1"} 1"#, 5, ParseErrorKind::ExpectedEquals),
            (r#"m{a} 1"#, 4, ParseErrorKind::ExpectedEquals),
            (r#"m{a=1} 1"#, 5, ParseErrorKind::ExpectedQuote),
            (
                r#"m{a="1"b="2"} 1"#,
                8,
                ParseErrorKind::ExpectedLabelSeparator,
            ),
            (r#"m{a="1""#, 8, ParseErrorKind::UnterminatedLabelSet),
            (r#"m{a="1","#, 9, ParseErrorKind::UnterminatedLabelSet),
            (r#"m{"#, 3, ParseErrorKind::UnterminatedLabelSet),
        ] {
            let e = one_error(line);
            assert_eq!((e.column, &e.kind), (column, &kind), "{line}");
        }
        assert_eq!(
            ParseErrorKind::ExpectedEquals.to_string(),
            "expected '=' after label name"
        );
        assert_eq!(
            ParseErrorKind::ExpectedLabelSeparator.to_string(),
            "expected ',' or '}' after label value"
        );
        assert_eq!(
            ParseErrorKind::UnterminatedLabelValue.to_string(),
            "unterminated label value"
        );
        assert_eq!(
            ParseErrorKind::InvalidMetricName.to_string(),
            "invalid metric name"
        );
        assert_eq!(
            ParseErrorKind::InvalidTimestamp.to_string(),
            "invalid timestamp"
        );
    }

    #[test]
    fn reappearing_family_keeps_its_type() {
        let page = "# TYPE envoy_cluster_upstream_rq counter\n\
            envoy_cluster_upstream_rq{response_code_class=\"5xx\"} 1\n\
            # TYPE envoy_cluster_bind_errors counter\n\
            envoy_cluster_bind_errors 0\n\
            # TYPE envoy_server_live gauge\n\
            envoy_server_live 1\n\
            envoy_cluster_upstream_rq{response_code_class=\"2xx\"} 2\n\
            orphan 3\n";
        let (samples, report) = collect(page);
        assert!(report.errors.is_empty());
        assert_eq!(report.families, 3);
        let kinds: Vec<(&str, MetricType)> =
            samples.iter().map(|s| (s.name.as_str(), s.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("envoy_cluster_upstream_rq", MetricType::Counter),
                ("envoy_cluster_bind_errors", MetricType::Counter),
                ("envoy_server_live", MetricType::Gauge),
                ("envoy_cluster_upstream_rq", MetricType::Counter),
                ("orphan", MetricType::Untyped),
            ]
        );
        // A sample before its family's TYPE line is untyped; after it, typed.
        let (samples, _) = collect("late 1\n# TYPE late gauge\nlate 2\n");
        assert_eq!(samples[0].kind, MetricType::Untyped);
        assert_eq!(samples[1].kind, MetricType::Gauge);
    }

    #[test]
    fn kinds_of_histogram_summary_and_openmetrics_families() {
        let page = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 2\nh_count 1\nh_created 5\n\
            # TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\n\
            # TYPE c counter\nc_total 4\nc_created 1\n\
            # TYPE gh gaugehistogram\ngh_bucket{le=\"+Inf\"} 1\ngh_gcount 1\ngh_gsum 2\n\
            # TYPE i info\ni_info{v=\"1\"} 1\n\
            # TYPE st stateset\nst{st=\"a\"} 1\n\
            # TYPE u unknown\nu 1\n\
            # TYPE g gauge\ng 1\ng_sum 3\n";
        let (samples, report) = collect(page);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.families, 8);
        let kind = |name: &str| samples.iter().find(|s| s.name == name).unwrap().kind;
        use MetricType::*;
        for (name, want) in [
            ("h_bucket", Histogram),
            ("h_sum", Histogram),
            ("h_count", Histogram),
            ("h_created", Histogram),
            ("s", Summary),
            ("s_sum", Summary),
            ("s_count", Summary),
            ("c_total", Counter),
            ("c_created", Counter),
            ("gh_bucket", Histogram),
            ("gh_gcount", Histogram),
            ("gh_gsum", Histogram),
            ("i_info", Gauge),
            ("st", Gauge),
            ("u", Untyped),
            ("g", Gauge),
            // A gauge owns no suffix: `g_sum` is a family of its own, undeclared.
            ("g_sum", Untyped),
        ] {
            assert_eq!(kind(name), want, "{name}");
        }
    }

    #[test]
    fn type_lines_are_validated() {
        let (samples, report) = collect(
            "# TYPE m countr\n# TYPE\n# TYPE 1m gauge\n# TYPE n\n# TYPE   ok   gauge  \nok 1\n",
        );
        let kinds: Vec<_> = report
            .errors
            .iter()
            .map(|e| (e.line, e.column, e.kind.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                (1, 10, ParseErrorKind::UnknownMetricType("countr".into())),
                (2, 7, ParseErrorKind::InvalidMetricName),
                (3, 8, ParseErrorKind::InvalidMetricName),
                (4, 9, ParseErrorKind::MissingMetricType),
            ]
        );
        assert_eq!(report.families, 1);
        assert_eq!(samples[0].kind, MetricType::Gauge);
        // HELP, UNIT and free comments are ignored, whatever they hold.
        let (samples, report) =
            collect("# HELP m some {{{ \"text\n# UNIT m seconds\n#just a comment\n#\nm 1\n");
        assert!(report.errors.is_empty());
        assert_eq!(samples.len(), 1);
        // `#TYPE` without a space is still a TYPE line (as in Go's parser).
        assert_eq!(collect("#TYPE m gauge\nm 1").0[0].kind, MetricType::Gauge);
    }

    #[test]
    fn filter_histogram_suffixes() {
        let f = FamilyFilter::new([
            "istio_request_duration_milliseconds",
            "istio_requests_total",
        ]);
        for name in [
            "istio_request_duration_milliseconds",
            "istio_request_duration_milliseconds_bucket",
            "istio_request_duration_milliseconds_count",
            "istio_request_duration_milliseconds_sum",
            "istio_request_duration_milliseconds_created",
            "istio_requests_total",
        ] {
            assert!(f.wants_sample_name(name), "{name}");
        }
        for name in [
            "istio_request_duration_milliseconds_bucketx",
            "istio_request_duration_milliseconds_max",
            "istio_request_duration",
            "istio_request_bytes_bucket",
            "istio_requests",
            "istio_requests_total_total_x",
        ] {
            assert!(!f.wants_sample_name(name), "{name}");
        }
        assert!(FamilyFilter::all().wants_sample_name("anything"));
        assert!(FamilyFilter::all().is_all());
        assert!(!FamilyFilter::new(Vec::<String>::new()).wants_sample_name("anything"));

        let page = "# TYPE istio_request_duration_milliseconds histogram\n\
            istio_request_duration_milliseconds_bucket{le=\"1\"} 1\n\
            istio_request_duration_milliseconds_bucket{le=\"+Inf\"} 2\n\
            istio_request_duration_milliseconds_sum 3\n\
            istio_request_duration_milliseconds_count 2\n\
            # TYPE istio_request_bytes histogram\n\
            istio_request_bytes_bucket{le=\"+Inf\"} 2\n\
            istio_request_bytes_sum 3\n\
            istio_request_bytes_count 2\n\
            # TYPE istio_requests_total counter\n\
            istio_requests_total{response_code=\"200\"} 9\n";
        let (samples, report) = collect_with(page, &f);
        let names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "istio_request_duration_milliseconds_bucket",
                "istio_request_duration_milliseconds_bucket",
                "istio_request_duration_milliseconds_sum",
                "istio_request_duration_milliseconds_count",
                "istio_requests_total",
            ]
        );
        assert_eq!(report.skipped, 3);
        assert_eq!(report.samples, 5);
        assert_eq!(report.families, 3);
        assert!(samples[..4].iter().all(|s| s.kind == MetricType::Histogram));
        assert_eq!(samples[4].kind, MetricType::Counter);
    }

    #[test]
    fn filter_uses_declared_families() {
        // Both are declared counters: the filter for the first must not take the second.
        let page = "# TYPE envoy_cluster_upstream_rq counter\n\
            envoy_cluster_upstream_rq{response_code_class=\"2xx\"} 2\n\
            # TYPE envoy_cluster_upstream_rq_total counter\n\
            envoy_cluster_upstream_rq_total 2\n";
        let f = FamilyFilter::new(["envoy_cluster_upstream_rq"]);
        assert!(f.wants_sample_name("envoy_cluster_upstream_rq_total"));
        let (samples, report) = collect_with(page, &f);
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].name, "envoy_cluster_upstream_rq");
        assert_eq!(report.skipped, 1);

        // OpenMetrics counter `foo` with sample `foo_total`: either name selects it.
        let om = "# TYPE foo counter\nfoo_total 1\nfoo_created 2\n# EOF\n";
        for filter in [["foo"], ["foo_total"]] {
            let (samples, _) = collect_with(om, &FamilyFilter::new(filter));
            assert!(samples.iter().any(|s| s.name == "foo_total"), "{filter:?}");
        }
        assert_eq!(collect_with(om, &FamilyFilter::new(["foo"])).0.len(), 2);
        // 0.0.4 counter declared as `foo_total`: the OpenMetrics family name selects it too.
        let text = "# TYPE foo_total counter\nfoo_total 1\n";
        assert_eq!(collect_with(text, &FamilyFilter::new(["foo"])).0.len(), 1);
        // A gauge owns no `_sum`: `g_sum` is not part of family `g`.
        let gauge = "# TYPE g gauge\ng 1\n# TYPE g_sum gauge\ng_sum 2\n";
        let (samples, _) = collect_with(gauge, &FamilyFilter::new(["g"]));
        assert_eq!(samples.len(), 1);
        // An undeclared suffixed sample follows the name rule.
        let (samples, _) = collect_with(
            "h_bucket{le=\"1\"} 1\nh_count 1\nx 1\n",
            &FamilyFilter::new(["h"]),
        );
        assert_eq!(samples.len(), 2);
    }

    #[test]
    fn skipped_lines_are_not_validated() {
        let page = "keep 1\nskip{a=\"\\q\"} garbage\nskip{{{\nkeep 2\n";
        let (samples, report) = collect_with(page, &FamilyFilter::new(["keep"]));
        assert_eq!(samples.len(), 2);
        assert_eq!(report.skipped, 2);
        assert_eq!(report.error_count, 0);
        // The same page with everything wanted has two errors.
        assert_eq!(collect(page).1.error_count, 2);
    }

    #[test]
    fn errors_are_capped_but_counted() {
        let mut page = String::new();
        for n in 0..100 {
            page.push_str(&format!("bad{{ {n}\ngood {n}\n"));
        }
        let (samples, report) = collect(&page);
        assert_eq!(samples.len(), 100);
        assert_eq!(report.error_count, 100);
        assert_eq!(report.errors.len(), MAX_KEPT_ERRORS);
        assert_eq!(report.errors[63].line, 127);
    }

    #[test]
    fn line_numbers_count_every_line() {
        let page = "\n# HELP a x\n\n# TYPE a gauge\r\na 1\n\na{b=c} 2\n";
        let (_, report) = collect(page);
        assert_eq!(report.errors.len(), 1);
        assert_eq!((report.errors[0].line, report.errors[0].column), (7, 5));
    }

    #[test]
    fn render_examples() {
        let mut out = String::new();
        render_sample(&mut out, "m", &[], 1.0, None);
        render_sample(
            &mut out,
            "m",
            &[("a", "x\"y\\z\nw"), ("b", "UF,URX")],
            0.25,
            Some(17),
        );
        render_sample(&mut out, "m", &[], f64::NAN, None);
        render_sample(&mut out, "m", &[], f64::INFINITY, None);
        render_sample(&mut out, "m", &[], f64::NEG_INFINITY, None);
        render_sample(&mut out, "m", &[], 1e300, None);
        render_sample(&mut out, "m", &[], 7.754e-05, None);
        render_sample(&mut out, "m", &[], 16440392441958861461.0, None);
        assert_eq!(
            out,
            "m 1\n\
             m{a=\"x\\\"y\\\\z\\nw\",b=\"UF,URX\"} 0.25 17\n\
             m NaN\n\
             m +Inf\n\
             m -Inf\n\
             m 1e300\n\
             m 7.754e-5\n\
             m 1.644039244195886e19\n"
        );
        let (samples, report) = collect(&out);
        assert!(report.errors.is_empty());
        assert_eq!(
            samples[1].labels,
            pairs(&[("a", "x\"y\\z\nw"), ("b", "UF,URX")])
        );
        assert_eq!(samples[7].value, 16440392441958861461.0);
    }

    #[test]
    fn empty_and_comment_only_pages() {
        for page in ["", "\n", "\r\n", "# HELP a b\n", "#"] {
            let (samples, report) = collect(page);
            assert!(samples.is_empty());
            assert_eq!(report, ParseReport::default(), "{page:?}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Label values: any char, with the characters that need care drawn often.
        fn label_value() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop_oneof![
                    3 => any::<char>(),
                    2 => prop::sample::select(vec!['"', '\\', '\n', ',', '}', '{', '=', ' ', '\t', 'n', '#', '\r']),
                    2 => prop::char::range(' ', '~'),
                ],
                0..24,
            )
            .prop_map(|chars| chars.into_iter().collect())
        }

        fn value() -> impl Strategy<Value = f64> {
            prop_oneof![
                any::<f64>(),
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                Just(0.0),
                Just(-0.0),
                (0u64..u64::MAX).prop_map(|n| n as f64),
                (-1_000_000i64..1_000_000).prop_map(|n| n as f64),
                (-1e6f64..1e6),
            ]
        }

        type Input = (String, Vec<(String, String)>, f64, Option<i64>);

        fn sample() -> impl Strategy<Value = Input> {
            (
                "[a-zA-Z_:][a-zA-Z0-9_:]{0,30}",
                prop::collection::vec(("[a-zA-Z_][a-zA-Z0-9_]{0,15}", label_value()), 0..8),
                value(),
                prop::option::of(any::<i64>()),
            )
        }

        fn same_value(a: f64, b: f64) -> bool {
            (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0)
        }

        /// A soup of the tokens that matter to the grammar.
        fn soup() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop_oneof![
                    prop::sample::select(vec![
                        "m",
                        "foo_bucket",
                        "{",
                        "}",
                        "\"",
                        "\\",
                        "=",
                        ",",
                        " ",
                        "\t",
                        "\n",
                        "\r",
                        "\r\n",
                        "# TYPE ",
                        "# EOF",
                        "# HELP ",
                        "#",
                        "1",
                        "-Inf",
                        "NaN",
                        "1.5e3",
                        "le",
                        "_total",
                        "é",
                        "日",
                        "1520879607.789",
                        "counter",
                        "histogram",
                        "\\n",
                        "\\\"",
                        "a=\"x\"",
                    ])
                    .prop_map(str::to_owned),
                    any::<char>().prop_map(String::from),
                ],
                0..64,
            )
            .prop_map(|parts| parts.concat())
        }

        fn check_never_panics(page: &str) {
            for filter in [FamilyFilter::all(), FamilyFilter::new(["m", "foo"])] {
                let mut delivered = 0;
                let report = parse(page, &filter, |s| {
                    delivered += 1;
                    // Walk the labels too: they must not panic either.
                    let n = s.labels.iter().count();
                    assert_eq!(n, s.labels.len());
                    assert_eq!(n == 0, s.labels.is_empty());
                    for (name, _) in s.labels.iter() {
                        assert!(s.labels.get(name).is_some());
                    }
                });
                assert_eq!(report.samples, delivered);
                assert!(report.errors.len() <= MAX_KEPT_ERRORS);
                assert!(report.error_count >= report.errors.len());
                let lines = page.split('\n').count();
                for e in &report.errors {
                    assert!(e.line >= 1 && e.line <= lines, "{e}");
                    assert!(e.column >= 1, "{e}");
                }
            }
        }

        /// Label text made of the bytes that matter to the grammar, long enough to cross
        /// 64-byte blocks.
        fn label_soup() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop_oneof![
                    4 => prop::sample::select(vec![
                        "a", "Z", "_", "9", "=", "\"", ",", "}", "{", " ", "\t", "\\", "\\\"",
                        "\\\\", "\\n", "é", ":", "-", "=\"", "\",", "\"}",
                    ])
                    .prop_map(str::to_owned),
                    3 => "[a-z_][a-z0-9_]{0,12}=\"[ -~]{0,20}\",?",
                ],
                0..40,
            )
            .prop_map(|parts| parts.concat())
        }

        /// The char-at-a-time decoder the parser used before escapes were copied in runs: the
        /// reference for [`unescape`].
        fn unescape_reference(value: &str) -> String {
            let mut out = String::with_capacity(value.len());
            let mut chars = value.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some(other @ ('\\' | '"')) => out.push(other),
                    Some(other) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => out.push('\\'),
                }
            }
            out
        }

        /// Label sets whose values hold runs of backslashes and escaped quotes at every offset
        /// around the 64-byte block edges: the labels read through the escape-aware quote cursor
        /// are those of the byte-by-byte reading.
        #[test]
        fn escaped_values_across_block_edges() {
            for pad in 0..140 {
                for tail in [r#"\\"#, r#"\""#, r#"\\\\"#, r#"\n\"x"#, r#"a\\\\\"b"#] {
                    let text = format!(
                        "a=\"{}{tail}\",bb=\"q{}\\\\\",c=\"\\n\"}}",
                        "x".repeat(pad),
                        "y".repeat(pad % 67)
                    );
                    let b = text.as_bytes();
                    let mut shape = Shape::default();
                    let exact = exact_label_set(b, 0, &mut shape);
                    let close = exact.expect("a valid set");
                    assert_eq!(scan::plain_label_set(b, 0), Some((close, true)), "{text:?}");
                    let raw = &text[..close];
                    let fast: Vec<_> = Labels {
                        raw,
                        shape: Shape {
                            escaped: true,
                            plain: true,
                        },
                    }
                    .iter()
                    .collect();
                    let slow: Vec<_> = Labels { raw, shape }.iter().collect();
                    assert_eq!(fast, slow, "{text:?}");
                    assert_eq!(fast.len(), 3, "{text:?}");
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn render_then_parse_round_trips(samples in prop::collection::vec(sample(), 1..6)) {
                let mut page = String::new();
                for (name, labels, value, ts) in &samples {
                    let labels: Vec<(&str, &str)> =
                        labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                    render_sample(&mut page, name, &labels, *value, *ts);
                }
                let (got, report) = collect(&page);
                prop_assert!(report.errors.is_empty(), "{:?} in {:?}", report.errors, page);
                prop_assert_eq!(got.len(), samples.len());
                for (g, (name, labels, value, ts)) in got.iter().zip(&samples) {
                    prop_assert_eq!(&g.name, name);
                    prop_assert_eq!(&g.labels, labels);
                    prop_assert!(same_value(g.value, *value), "{} != {} in {:?}", g.value, value, page);
                    prop_assert_eq!(g.ts, *ts);
                    prop_assert_eq!(g.kind, MetricType::Untyped);
                }
            }

            /// The 64-byte validation accepts a label set only where the byte-by-byte one does,
            /// at the same `}` and with the same escapes, and accepts every valid set without
            /// blanks; the
            /// labels read from a plain set are those read from the same set validated byte by byte.
            #[test]
            fn plain_label_sets_are_what_the_exact_validation_accepts(text in label_soup()) {
                let b = text.as_bytes();
                let mut shape = Shape::default();
                let exact = exact_label_set(b, 0, &mut shape);
                let fast = scan::plain_label_set(b, 0);
                match fast {
                    Some((close, escaped)) => {
                        prop_assert_eq!(exact.clone(), Ok(close), "{:?}", text);
                        prop_assert_eq!(shape.escaped, escaped, "{:?}", text);
                    }
                    None => {
                        if let Ok(close) = exact {
                            prop_assert!(
                                b[..close].iter().any(|c| matches!(c, b' ' | b'\t')),
                                "valid set without blanks refused: {:?}", text
                            );
                        }
                    }
                }
                if let Ok(close) = exact {
                    let raw = &text[..close];
                    let plain = Shape { escaped: shape.escaped, plain: fast.is_some() };
                    let fast: Vec<_> = Labels { raw, shape: plain }.iter().collect();
                    let slow: Vec<_> = Labels { raw, shape }.iter().collect();
                    prop_assert_eq!(fast, slow);
                }
            }

            #[test]
            fn unescape_matches_the_char_at_a_time_decoder(value in label_soup(), more in label_value()) {
                for v in [value.as_str(), more.as_str(), &format!("{value}\\")] {
                    prop_assert_eq!(unescape(v), unescape_reference(v), "{:?}", v);
                }
            }

            /// The short-decimal fast path gives exactly `str::parse`'s value, or leaves the text
            /// to it.
            #[test]
            fn short_decimals_are_what_std_parses(
                text in "[-+]?[0-9]{0,17}(\\.[0-9]{0,17})?",
                odd in "[-+.0-9eE]{0,20}",
            ) {
                for t in [text.as_str(), odd.as_str()] {
                    if let Some(v) = short_decimal(t.as_bytes()) {
                        let want: f64 = t.parse().unwrap();
                        prop_assert_eq!(v.to_bits(), want.to_bits(), "{:?}", t);
                    }
                    let std = t.parse::<f64>().ok().filter(|v| v.is_finite());
                    let got = parse_value(t);
                    prop_assert_eq!(got.map(f64::to_bits), std.map(f64::to_bits), "{:?}", t);
                }
            }

            #[test]
            fn never_panics_on_arbitrary_strings(page in any::<String>()) {
                check_never_panics(&page);
            }

            #[test]
            fn never_panics_on_token_soup(page in soup()) {
                check_never_panics(&page);
            }

            #[test]
            fn never_panics_on_mutated_valid_text(
                s in sample(),
                cut in any::<prop::sample::Index>(),
                insert in soup(),
            ) {
                let mut page = String::from("# TYPE m counter\n");
                let labels: Vec<(&str, &str)> = s.1.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                render_sample(&mut page, &s.0, &labels, s.2, s.3);
                let mut at = cut.index(page.len() + 1);
                while !page.is_char_boundary(at) {
                    at -= 1;
                }
                page.insert_str(at, &insert);
                check_never_panics(&page);
            }
        }
    }
}
