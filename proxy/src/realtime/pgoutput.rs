//! pgoutput's logical replication messages (protocol version 1, text
//! values), as `pg_logical_slot_get_binary_changes` returns them one a row:
//! begin, commit, relation, insert, update, delete, logical message. Pure:
//! bytes in, typed messages out. Messages this feed does not use (origin,
//! type, truncate) decode as `Other`.

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// A TOAST-ed value the update did not change (not in the WAL).
    Unchanged,
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Part of the replica identity (the primary key, or every column with
    /// `REPLICA IDENTITY FULL`).
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub id: u32,
    pub schema: String,
    pub table: String,
    /// `d` default, `f` full, `i` index, `n` nothing.
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A transaction's changes follow; its commit time (µs since 2000-01-01).
    Begin {
        commit_time: i64,
    },
    Commit,
    Relation(Relation),
    Insert {
        relation: u32,
        new: Vec<Value>,
    },
    /// `old`: the old key (only when it changed) or, with `REPLICA IDENTITY
    /// FULL`, the whole old row.
    Update {
        relation: u32,
        old: Option<Vec<Value>>,
        new: Vec<Value>,
    },
    Delete {
        relation: u32,
        old: Vec<Value>,
    },
    /// A logical-decoding message (`pg_logical_emit_message`).
    Logical {
        prefix: String,
        content: Vec<u8>,
    },
    Other,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

type Result<T> = std::result::Result<T, String>;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len()).ok_or("pgoutput message too short")?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn cstr(&mut self) -> Result<String> {
        let rest = &self.bytes[self.at..];
        let nul = rest.iter().position(|b| *b == 0).ok_or("unterminated string in a pgoutput message")?;
        let s = String::from_utf8_lossy(&rest[..nul]).into_owned();
        self.at += nul + 1;
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Vec<Value>> {
        let n = self.i16()?;
        let mut values = Vec::with_capacity(n.max(0) as usize);
        for _ in 0..n {
            values.push(match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                b't' | b'b' => {
                    let len = self.i32()?;
                    let bytes = self.take(usize::try_from(len).map_err(|_| "negative value length")?)?;
                    Value::Text(String::from_utf8_lossy(bytes).into_owned())
                }
                other => return Err(format!("unknown tuple value kind {other}")),
            });
        }
        Ok(values)
    }
}

pub fn decode(bytes: &[u8]) -> Result<Message> {
    let mut r = Reader { bytes, at: 1 };
    Ok(match bytes.first().copied().ok_or("empty pgoutput message")? {
        b'B' => {
            r.i64()?;
            Message::Begin { commit_time: r.i64()? }
        }
        b'C' => Message::Commit,
        b'R' => {
            let id = r.i32()? as u32;
            let schema = r.cstr()?;
            let table = r.cstr()?;
            let replica_identity = r.u8()?;
            let n = r.i16()?;
            let mut columns = Vec::with_capacity(n.max(0) as usize);
            for _ in 0..n {
                let flags = r.u8()?;
                let name = r.cstr()?;
                let type_oid = r.i32()? as u32;
                r.i32()?;
                columns.push(Column { key: flags & 1 == 1, name, type_oid });
            }
            Message::Relation(Relation { id, schema, table, replica_identity, columns })
        }
        b'I' => {
            let relation = r.i32()? as u32;
            r.u8()?; // 'N'
            Message::Insert { relation, new: r.tuple()? }
        }
        b'U' => {
            let relation = r.i32()? as u32;
            let mut old = None;
            let mut kind = r.u8()?;
            if kind == b'K' || kind == b'O' {
                old = Some(r.tuple()?);
                kind = r.u8()?;
            }
            if kind != b'N' {
                return Err(format!("update without a new tuple ({kind})"));
            }
            Message::Update { relation, old, new: r.tuple()? }
        }
        b'D' => {
            let relation = r.i32()? as u32;
            r.u8()?; // 'K' or 'O'
            Message::Delete { relation, old: r.tuple()? }
        }
        b'M' => {
            r.u8()?;
            r.i64()?;
            let prefix = r.cstr()?;
            let len = r.i32()?;
            let content = r.take(usize::try_from(len).map_err(|_| "negative message length")?)?.to_vec();
            Message::Logical { prefix, content }
        }
        _ => Message::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cstr(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    #[test]
    fn relation_insert_update_delete_and_messages_decode() {
        let mut rel = vec![b'R'];
        rel.extend_from_slice(&16384u32.to_be_bytes());
        cstr(&mut rel, "public");
        cstr(&mut rel, "todos");
        rel.push(b'd');
        rel.extend_from_slice(&2i16.to_be_bytes());
        for (flags, name, oid) in [(1u8, "id", 20u32), (0, "title", 25)] {
            rel.push(flags);
            cstr(&mut rel, name);
            rel.extend_from_slice(&oid.to_be_bytes());
            rel.extend_from_slice(&(-1i32).to_be_bytes());
        }
        let Message::Relation(r) = decode(&rel).unwrap() else { panic!("a relation") };
        assert_eq!((r.schema.as_str(), r.table.as_str(), r.columns.len()), ("public", "todos", 2));
        assert!(r.columns[0].key && !r.columns[1].key);

        let mut ins = vec![b'I'];
        ins.extend_from_slice(&16384u32.to_be_bytes());
        ins.push(b'N');
        ins.extend_from_slice(&2i16.to_be_bytes());
        ins.push(b't');
        ins.extend_from_slice(&1i32.to_be_bytes());
        ins.push(b'7');
        ins.push(b'n');
        assert_eq!(
            decode(&ins).unwrap(),
            Message::Insert { relation: 16384, new: vec![Value::Text("7".into()), Value::Null] }
        );

        let mut upd = vec![b'U'];
        upd.extend_from_slice(&16384u32.to_be_bytes());
        upd.push(b'N');
        upd.extend_from_slice(&1i16.to_be_bytes());
        upd.push(b'u');
        assert_eq!(decode(&upd).unwrap(), Message::Update { relation: 16384, old: None, new: vec![Value::Unchanged] });

        let mut msg = vec![b'M', 1];
        msg.extend_from_slice(&0i64.to_be_bytes());
        cstr(&mut msg, "fluxbase_realtime");
        msg.extend_from_slice(&2i32.to_be_bytes());
        msg.extend_from_slice(b"{}");
        assert_eq!(
            decode(&msg).unwrap(),
            Message::Logical { prefix: "fluxbase_realtime".into(), content: b"{}".to_vec() }
        );
        assert!(decode(&ins[..8]).is_err(), "a cut message is an error, not a panic");
    }
}
