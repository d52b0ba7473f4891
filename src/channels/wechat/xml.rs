//! The platform's flat XML: `<xml><Name>value</Name>…</xml>`, parsed strictly.
//!
//! The endpoint is on the internet, so the parser is the first thing an attacker reaches.
//! It refuses what WeChat never sends and what XML attacks are made of: a DOCTYPE (and so
//! any entity declaration: billion laughs, external entities), references to undeclared
//! entities, non-UTF-8 bytes, unbalanced or mismatched tags, duplicate fields, deep nesting.
//! The size limit is the HTTP layer's (the body is read with a cap before it gets here).

use quick_xml::events::Event;
use quick_xml::Reader;

/// Nesting allowed below `<xml>`; events such as `pic_sysphoto` nest a few levels.
const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("DOCTYPE and entity declarations are not accepted")]
    Doctype,
    #[error("reference to an undeclared entity &{0};")]
    UnknownEntity(String),
    #[error("processing instructions are not accepted")]
    ProcessingInstruction,
    #[error("elements nest deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("malformed XML: {0}")]
    Malformed(String),
}

/// The direct children of the root element, in document order, with their text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field's value with surrounding whitespace removed; `None` when absent or blank.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// Parses a message body. The root element must be `<xml>`.
pub fn parse(body: &[u8]) -> Result<Fields, XmlError> {
    let text = std::str::from_utf8(body).map_err(|_| XmlError::NotUtf8)?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut depth = 0usize;
    let mut root_done = false;
    let mut current: Option<(String, String)> = None;
    let malformed = |e: &dyn std::fmt::Display| XmlError::Malformed(e.to_string());
    loop {
        let event = reader.read_event().map_err(|e| malformed(&e))?;
        match event {
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::PI(_) => return Err(XmlError::ProcessingInstruction),
            Event::Decl(_) | Event::Comment(_) => {}
            Event::Start(e) | Event::Empty(e)
                if root_done || (depth == 0 && e.name().as_ref() != b"xml") =>
            {
                let _ = e;
                return Err(XmlError::Malformed(if root_done {
                    "content after the root element".into()
                } else {
                    "the root element must be <xml>".into()
                }));
            }
            Event::Start(e) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                if depth == 2 {
                    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    current = Some((name, String::new()));
                }
            }
            Event::Empty(e) => match depth {
                0 => root_done = true,
                1 => push(
                    &mut fields,
                    String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                    String::new(),
                )?,
                _ => {}
            },
            Event::End(_) => {
                if depth == 2 {
                    if let Some((name, value)) = current.take() {
                        push(&mut fields, name, value)?;
                    }
                }
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    root_done = true;
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|e| malformed(&e))?;
                if depth == 0 && !s.trim().is_empty() {
                    return Err(XmlError::Malformed("text outside the root element".into()));
                }
                if depth == 2 {
                    if let Some((_, v)) = current.as_mut() {
                        v.push_str(&s);
                    }
                }
            }
            Event::CData(c) => {
                if depth == 0 {
                    return Err(XmlError::Malformed("CDATA outside the root element".into()));
                }
                if depth == 2 {
                    let s = c.decode().map_err(|e| malformed(&e))?;
                    if let Some((_, v)) = current.as_mut() {
                        v.push_str(&s);
                    }
                }
            }
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(|e| malformed(&e))?
                        .ok_or_else(|| XmlError::Malformed("bad character reference".into()))?
                } else {
                    let name = r.decode().map_err(|e| malformed(&e))?;
                    match name.as_ref() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => {
                            return Err(XmlError::UnknownEntity(other.chars().take(32).collect()))
                        }
                    }
                };
                if depth == 0 {
                    return Err(XmlError::Malformed("text outside the root element".into()));
                }
                if depth == 2 {
                    if let Some((_, v)) = current.as_mut() {
                        v.push(resolved);
                    }
                }
            }
            Event::Eof => break,
        }
    }
    if depth != 0 || !root_done {
        return Err(XmlError::Malformed(
            "the document ends before the root element closes".into(),
        ));
    }
    Ok(Fields(fields))
}

fn push(fields: &mut Vec<(String, String)>, name: String, value: String) -> Result<(), XmlError> {
    // Two FromUserName fields would let a reader and a check disagree on the sender.
    if fields.iter().any(|(n, _)| *n == name) {
        return Err(XmlError::Malformed(format!("duplicate element <{name}>")));
    }
    fields.push((name, value));
    Ok(())
}

/// Builds a flat `<xml>` document: strings in CDATA, numbers bare, as the platform does.
#[derive(Debug, Default)]
pub struct XmlBuilder(String);

impl XmlBuilder {
    pub fn new() -> Self {
        XmlBuilder(String::from("<xml>"))
    }

    pub fn cdata(mut self, name: &str, value: &str) -> Self {
        self.0
            .push_str(&format!("<{name}>{}</{name}>", cdata(value)));
        self
    }

    pub fn number(mut self, name: &str, value: i64) -> Self {
        self.0.push_str(&format!("<{name}>{value}</{name}>"));
        self
    }

    /// An element holding already-built XML (`TransInfo` around `KfAccount`).
    pub fn nested(mut self, name: &str, inner: XmlBuilder) -> Self {
        self.0.push_str(&format!(
            "<{name}>{}</{name}>",
            inner.0.trim_start_matches("<xml>")
        ));
        self
    }

    pub fn finish(mut self) -> String {
        self.0.push_str("</xml>");
        self.0
    }
}

/// A CDATA section holding any text: `]]>` cannot occur inside one, so it is split
/// across two sections.
pub fn cdata(value: &str) -> String {
    format!("<![CDATA[{}]]>", value.replace("]]>", "]]]]><![CDATA[>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_text_message() {
        let f = parse(
            "<?xml version=\"1.0\"?><xml>\n <ToUserName><![CDATA[gh_1]]></ToUserName>\n <FromUserName><![CDATA[o_1]]></FromUserName><CreateTime>1348831860</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[信用卡 丢了]]></Content><MsgId>1234567890123456</MsgId><!-- note --></xml>"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(f.get("FromUserName"), Some("o_1"));
        assert_eq!(f.get("Content"), Some("信用卡 丢了"));
        assert_eq!(f.text("MsgId"), Some("1234567890123456"));
        assert_eq!(f.get("Missing"), None);
    }

    #[test]
    fn resolves_predefined_and_character_references_and_nested_fields() {
        let f = parse(b"<xml><Content>a &amp; b &lt;c&gt; &#20320;&#x597D;</Content><ScanCodeInfo><ScanType>qrcode</ScanType></ScanCodeInfo><Empty/></xml>").unwrap();
        assert_eq!(f.get("Content"), Some("a & b <c> 你好"));
        assert_eq!(f.get("ScanCodeInfo"), Some(""));
        assert_eq!(f.get("Empty"), Some(""));
    }

    #[test]
    fn refuses_hostile_and_broken_documents() {
        let bomb = b"<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><xml><Content>&lol2;</Content></xml>";
        assert_eq!(parse(bomb), Err(XmlError::Doctype));
        let xxe = b"<!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><xml><Content>&x;</Content></xml>";
        assert_eq!(parse(xxe), Err(XmlError::Doctype));
        assert_eq!(
            parse(b"<xml><Content>&x;</Content></xml>"),
            Err(XmlError::UnknownEntity("x".into()))
        );
        assert_eq!(
            parse(b"<?php x?><xml/>"),
            Err(XmlError::ProcessingInstruction)
        );
        // GBK for 你好.
        assert_eq!(
            parse(b"<xml><Content>\xc4\xe3\xba\xc3</Content></xml>"),
            Err(XmlError::NotUtf8)
        );
        for bad in [
            &b""[..],
            b"<xml>",
            b"<xml><A>1</B></xml>",
            b"<xml><A>1</A>",
            b"<root><A>1</A></root>",
            b"<xml/><xml/>",
            b"junk<xml/>",
            b"<xml><A>1</A><A>2</A></xml>",
            b"<xml><A><![CDATA[x</A></xml>",
        ] {
            assert!(
                matches!(parse(bad), Err(XmlError::Malformed(_))),
                "{:?} → {:?}",
                String::from_utf8_lossy(bad),
                parse(bad)
            );
        }
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(20), "</a>".repeat(20));
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::TooDeep));
    }

    #[test]
    fn builds_documents_that_parse_back_even_with_cdata_terminators() {
        let hostile = "a]]><b>x</b>]]>";
        let xml = XmlBuilder::new()
            .cdata("Content", hostile)
            .number("CreateTime", 42)
            .nested("TransInfo", XmlBuilder::new().cdata("KfAccount", "kf@x"))
            .finish();
        let f = parse(xml.as_bytes()).unwrap();
        assert_eq!(f.get("Content"), Some(hostile));
        assert_eq!(f.get("CreateTime"), Some("42"));
        assert!(xml.contains("<TransInfo><KfAccount><![CDATA[kf@x]]></KfAccount></TransInfo>"));
    }
}
