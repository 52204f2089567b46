//! Finds the line of a document path, for errors found after parsing.
//!
//! serde_yaml attaches the position of the YAML event at which an error arises.
//! So to locate `a[2].b` we deserialize the document again with a seed that
//! walks to that node and fails on purpose there (on the key `b` itself when the
//! path ends in a key); the error's location is the node's line. This follows
//! YAML's own parser, so block style, flow style and quoting all work.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::error::{DocPath, Segment};

/// Marks our own error, so it is told apart from anything else going wrong.
const PROBE: &str = "weir-config-locate-probe";

/// 1-based line of the node at `path` (of its key when the path ends in a key).
/// When the node is absent (a defaulted field), the line of the nearest ancestor.
pub(super) fn line_of(text: &str, path: &DocPath) -> Option<usize> {
    let segments = path.segments();
    (1..=segments.len())
        .rev()
        .find_map(|len| probe(text, &segments[..len]))
}

fn probe(text: &str, path: &[Segment]) -> Option<usize> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    match (Navigate { rest: path }).deserialize(deserializer) {
        Err(err) if err.to_string().contains(PROBE) => err.location().map(|l| l.line()),
        _ => None,
    }
}

/// Walks down `rest`; fails with [`PROBE`] at the target.
struct Navigate<'p> {
    rest: &'p [Segment],
}

impl<'de> DeserializeSeed<'de> for Navigate<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.rest.is_empty() {
            // Every visit method of `Target` is the default "invalid type" error,
            // whose text includes `expecting`, i.e. PROBE.
            deserializer.deserialize_any(Target).map(|_| ())
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Navigate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if let Some((Segment::Key(wanted), tail)) = self.rest.split_first() {
            let seed = || KeySeed {
                wanted,
                is_target: tail.is_empty(),
            };
            while let Some(found) = map.next_key_seed(seed())? {
                if found {
                    map.next_value_seed(Navigate { rest: tail })?;
                    break;
                }
                map.next_value::<IgnoredAny>()?;
            }
        }
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some((Segment::Index(wanted), tail)) = self.rest.split_first() {
            let mut skipped = 0;
            while skipped < *wanted && seq.next_element::<IgnoredAny>()?.is_some() {
                skipped += 1;
            }
            if skipped == *wanted {
                seq.next_element_seed(Navigate { rest: tail })?;
            }
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// The node the path names: any visit is an error carrying [`PROBE`].
struct Target;

impl Visitor<'_> for Target {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PROBE)
    }
}

/// Reads a mapping key: `true` if it is the one wanted; fails on it if it is the target.
struct KeySeed<'p> {
    wanted: &'p str,
    is_target: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        match (key == self.wanted, self.is_target) {
            (true, true) => Err(E::custom(PROBE)),
            (found, _) => Ok(found),
        }
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
listeners:
  - name: a
    address: 127.0.0.1:1
    virtual_hosts:
      - name: vh0
        domains: [\"*\"]
        routes: []
      - name: vh1
        domains:
          - films.local
          - \"*.films\"
        routes:
          - match: {prefix: /a}
            route: {cluster: x}
          -
            match:
              prefix: /b
            route:
              cluster: y
clusters: [{name: x, endpoints: [{address: 10.0.0.1, port: 1}]}]
";

    fn path(segments: &[Segment]) -> DocPath {
        DocPath(segments.to_vec())
    }

    fn k(key: &str) -> Segment {
        Segment::Key(key.to_owned())
    }

    fn vh1() -> Vec<Segment> {
        vec![
            k("listeners"),
            Segment::Index(0),
            k("virtual_hosts"),
            Segment::Index(1),
        ]
    }

    #[test]
    fn block_style_keys_and_items() {
        assert_eq!(line_of(DOC, &path(&[k("listeners")])), Some(1));
        assert_eq!(
            line_of(
                DOC,
                &path(&[k("listeners"), Segment::Index(0), k("address")])
            ),
            Some(3)
        );
        assert_eq!(line_of(DOC, &path(&vh1())), Some(8));
        let mut domains = vh1();
        domains.extend([k("domains"), Segment::Index(1)]);
        assert_eq!(line_of(DOC, &path(&domains)), Some(11));
    }

    #[test]
    fn flow_style_and_items_on_their_own_line() {
        let mut first = vh1();
        first.extend([k("routes"), Segment::Index(0), k("route"), k("cluster")]);
        assert_eq!(line_of(DOC, &path(&first)), Some(14));
        let mut second = vh1();
        second.extend([k("routes"), Segment::Index(1), k("route"), k("cluster")]);
        assert_eq!(line_of(DOC, &path(&second)), Some(19));
        let mut second_match = vh1();
        second_match.extend([k("routes"), Segment::Index(1), k("match"), k("prefix")]);
        assert_eq!(line_of(DOC, &path(&second_match)), Some(17));
        let endpoint = [
            k("clusters"),
            Segment::Index(0),
            k("endpoints"),
            Segment::Index(0),
            k("port"),
        ];
        assert_eq!(line_of(DOC, &path(&endpoint)), Some(20));
    }

    #[test]
    fn absent_node_falls_back_to_nearest_ancestor() {
        let mut missing = vh1();
        missing.extend([k("routes"), Segment::Index(0), k("name")]);
        assert_eq!(line_of(DOC, &path(&missing)), Some(13));
        let out_of_range = [k("listeners"), Segment::Index(5), k("name")];
        assert_eq!(line_of(DOC, &path(&out_of_range)), Some(1));
        assert_eq!(line_of(DOC, &path(&[k("admin")])), None);
        assert_eq!(line_of(DOC, &DocPath::root()), None);
    }
}
