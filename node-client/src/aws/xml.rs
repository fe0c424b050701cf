//! A small element tree over quick-xml, enough for the EC2 and Auto Scaling
//! Query API answers and S3's error documents: element local names
//! (namespaces dropped), their text, their children in order. Attributes,
//! comments and processing instructions are skipped.

use quick_xml::events::Event;
use quick_xml::reader::Reader;

/// One element.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// Local name (`reservationSet`, `member`, ...).
    pub name: String,
    /// The text directly inside it, entities resolved.
    pub text: String,
    /// Child elements in document order.
    pub children: Vec<Element>,
}

impl Element {
    /// Children named `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The element at `path` (child names, first match at each step).
    pub fn at(&self, path: &[&str]) -> Option<&Element> {
        path.iter().try_fold(self, |e, n| e.child(n))
    }

    /// The trimmed text at `path`, if present and not empty.
    pub fn text_at(&self, path: &[&str]) -> Option<&str> {
        self.at(path)
            .map(|e| e.text.trim())
            .filter(|t| !t.is_empty())
    }
}

fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

/// Parse a document into its root element.
pub fn parse(xml: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(xml);
    // The stack of open elements; the bottom one collects the root.
    let mut stack: Vec<Element> = vec![Element::default()];
    let err = |e: &dyn std::fmt::Display, r: &Reader<&[u8]>| {
        format!("XML at byte {}: {e}", r.buffer_position())
    };
    loop {
        let ev = reader.read_event().map_err(|e| err(&e, &reader))?;
        match ev {
            Event::Start(s) => stack.push(Element {
                name: String::from_utf8_lossy(s.local_name().as_ref()).into_owned(),
                ..Default::default()
            }),
            Event::Empty(s) => {
                let e = Element {
                    name: String::from_utf8_lossy(s.local_name().as_ref()).into_owned(),
                    ..Default::default()
                };
                if let Some(top) = stack.last_mut() {
                    top.children.push(e);
                }
            }
            Event::End(_) => {
                if stack.len() < 2 {
                    return Err("XML: unbalanced end tag".into());
                }
                if let (Some(done), Some(parent)) = (stack.pop(), stack.last_mut()) {
                    parent.children.push(done);
                }
            }
            Event::Text(t) => {
                let s = t.xml_content().map_err(|e| err(&e, &reader))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&s);
                }
            }
            Event::CData(t) => {
                let s = t.decode().map_err(|e| err(&e, &reader))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&s);
                }
            }
            Event::GeneralRef(r) => {
                let c = if r.is_char_ref() {
                    r.resolve_char_ref().map_err(|e| err(&e, &reader))?
                } else {
                    let n = r.decode().map_err(|e| err(&e, &reader))?;
                    entity(&n)
                };
                let c = c.ok_or_else(|| "XML: unknown entity".to_string())?;
                if let Some(top) = stack.last_mut() {
                    top.text.push(c);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if stack.len() != 1 {
        return Err("XML: unclosed element".into());
    }
    stack
        .pop()
        .and_then(|b| b.children.into_iter().next())
        .ok_or_else(|| "XML: no root element".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_with_namespaces_entities_and_empty_elements() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <reservationSet><item><instancesSet>
    <item><instanceId>i-1</instanceId><privateDnsName>ip-10-0-0-1.ec2.internal</privateDnsName><tagSet/></item>
    <item><instanceId>i-2</instanceId></item>
  </instancesSet></item></reservationSet>
  <nextToken>a&amp;b&#x3d;</nextToken>
</DescribeInstancesResponse>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "DescribeInstancesResponse");
        assert_eq!(root.text_at(&["nextToken"]), Some("a&b="));
        let items: Vec<_> = root
            .at(&["reservationSet", "item", "instancesSet"])
            .unwrap()
            .all("item")
            .collect();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0].text_at(&["privateDnsName"]),
            Some("ip-10-0-0-1.ec2.internal")
        );
        assert_eq!(items[1].text_at(&["privateDnsName"]), None);
        assert!(items[0].child("tagSet").is_some());
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("<a>").is_err());
        assert!(parse("").is_err());
    }
}
