//! COM_STMT_EXECUTE while mirroring: a prepared write is rendered with
//! its bound values and takes the path a text write takes (temporary
//! tables, ordering, staging, the mirrored write).

use super::super::link::Link;
use super::super::prepared::Statements;
use super::super::SessionError;
use super::temporary::Temporary;
use super::{keyed, params, routines, sequences, Capture, WriteSrc};
use crate::protocol::response::Expect;
use crate::router::lexer;
use crate::router::{Class, SchemaObject, TxnOp};

impl Capture {
    /// COM_STMT_EXECUTE while mirroring: writes are rendered with their
    /// bound values and go through the same path as text writes.
    /// `payload` is already mapped to the backend's statement id; `id` is
    /// the client's.
    pub(in super::super) async fn execute(
        &mut self,
        cx: &mut Link<'_>,
        stmts: &mut Statements,
        id: Option<u32>,
        payload: Vec<u8>,
        seq: u8,
    ) -> Result<(), SessionError> {
        let prepared = id
            .and_then(|id| stmts.get(&id))
            .map(|p| (p.route.clone(), p.sql.clone()));
        let (Some(m), Some((route, sql))) = (cx.capturing(), prepared) else {
            cx.forward(&payload, seq, Expect::ResultSet).await?;
            return Ok(());
        };
        let [r] = route.statements.as_slice() else {
            cx.forward(&payload, seq, Expect::ResultSet).await?;
            return Ok(());
        };
        // Temporary tables, as for a query (see `temporary`).
        self.carried = None;
        let real;
        let r = if r.object == Some(SchemaObject::TemporaryTable) {
            lexer::tokenize(&sql, &mut cx.scratch.tokens);
            self.temporary_table(cx, r, (&sql, &payload), seq).await?;
            return Ok(());
        } else if self.temp_tables.is_empty() {
            r
        } else {
            lexer::tokenize(&sql, &mut cx.scratch.tokens);
            match self.temporary(cx, &m, r, (&sql, &payload), seq).await? {
                Temporary::Usual => r,
                Temporary::Done(true) => return Ok(()),
                Temporary::Done(false) => {
                    cx.forward(&payload, seq, Expect::ResultSet).await?;
                    return Ok(());
                }
                Temporary::Carried(c) => {
                    real = c;
                    &real
                }
            }
        };
        if !matches!(r.class, Class::Write(_) | Class::Ddl) {
            // A prepared read may call a stored function that writes.
            lexer::tokenize(&sql, &mut cx.scratch.tokens);
            if let Some(f) = self.writing_call(cx, &m, &sql).await? {
                let reason = routines::reason(&f);
                return self.unsafe_write(cx, &m, &[], &reason, &payload, seq).await;
            }
            match sequences::usage(&sql, &cx.scratch.tokens) {
                sequences::Usage::None => {}
                sequences::Usage::Advances(names) => {
                    return self.advance_sequences(cx, &m, &names, &payload, seq).await;
                }
                sequences::Usage::Refused(reason) => {
                    return self.unsafe_write(cx, &m, &[], &reason, &payload, seq).await;
                }
            }
        }
        // An unsafe reason that does not hold here (`order_free_insert`)
        // is no reason.
        let order_free = matches!(r.class, Class::Write(_))
            && self.mirrored(cx, r)
            && self.order_free_insert(cx, &m, r, &sql).await?;
        let safe = order_free || keyed::unsafe_reason(r).is_none();
        // An INSERT … SELECT that `ordered` may make exact: rendered, then
        // run as that text with the order added (`ordered`).
        let orderable = !safe
            && r.determinism.unsafe_reason
                == Some(crate::router::determinism::UnsafeReason::InsertSelectWithoutOrder);
        // A CALL: rendered, then replayed as that text (see `call`).
        let call = r.class == Class::Write(crate::router::WriteKind::Call);
        let render = safe || orderable || call;
        if matches!(r.class, Class::Write(_)) && self.mirrored(cx, r) && render {
            // Rendering depends on NO_BACKSLASH_ESCAPES.
            self.ensure_vars(cx).await?;
        }
        // Only mirrored writes are rendered (the parameter types an execute
        // carries were recorded by `stmt_command`). Long data is used once.
        let rendered = match &r.class {
            Class::Write(_) if self.mirrored(cx, r) && render => {
                self.render_execute(stmts, id, &payload)
            }
            _ => None,
        };
        if let Some(p) = id.and_then(|id| stmts.get_mut(&id)) {
            p.long_data.clear();
        }
        match &r.class {
            Class::Write(_) if self.mirrored(cx, r) => {
                // Staged as a query would be (see `staged`): the text runs
                // instead of the execute, as below.
                if let Some(text) = &rendered {
                    if self.must_stage(cx, &m, r, text).await?
                        && self.staged_insert_select(cx, &m, r, text, seq).await?
                    {
                        return Ok(());
                    }
                }
                if let (true, Some(text)) = (call, &rendered) {
                    // The text runs instead of the execute: a replayed
                    // CALL answers with an OK packet (its body returns no
                    // rows).
                    return match self.call(cx, &m, r, (text, true), seq).await? {
                        Ok(()) => Ok(()),
                        Err(why) => {
                            let reason = super::call::refusal(&why);
                            self.unsafe_write(cx, &m, &[], &reason, &payload, seq).await
                        }
                    };
                }
                if let (true, Some(text)) = (orderable, &rendered) {
                    // The text runs instead of the execute: the same OK
                    // packet answers a write (not one that returns rows).
                    let returns_rows = {
                        lexer::tokenize(text, &mut cx.scratch.tokens);
                        cx.scratch
                            .tokens
                            .iter()
                            .any(|t| t.is_word(text, "RETURNING"))
                    };
                    if !returns_rows {
                        if let Some(ordered) = self.ordered_insert_select(cx, &m, r, text).await? {
                            lexer::tokenize(&ordered, &mut cx.scratch.tokens);
                            return self
                                .mirrored_write(cx, &m, r, WriteSrc::Query(&ordered), seq)
                                .await;
                        }
                        if self.staged_insert_select(cx, &m, r, text, seq).await? {
                            return Ok(());
                        }
                    }
                }
                if let Some(reason) = keyed::unsafe_reason(r).filter(|_| !safe) {
                    let reason = reason.to_string();
                    return self
                        .unsafe_write(cx, &m, &r.tables, &reason, &payload, seq)
                        .await;
                }
                match rendered {
                    Some(rendered) => {
                        let src = WriteSrc::Execute {
                            packet: &payload,
                            rendered,
                        };
                        self.mirrored_write(cx, &m, r, src, seq).await
                    }
                    None => {
                        let reason = "its bound values could not be decoded";
                        self.unsafe_write(cx, &m, &r.tables, reason, &payload, seq)
                            .await
                    }
                }
            }
            Class::Transaction(TxnOp::Commit) if !self.txn.is_empty() => {
                let reply = self.commit_txn(cx, &m, &payload, None).await?;
                cx.relay(seq, reply, false).await
            }
            Class::Transaction(TxnOp::Rollback) => {
                cx.forward(&payload, seq, Expect::ResultSet).await?;
                self.end_txn(cx);
                Ok(())
            }
            Class::Ddl if !r.tables.is_empty() && self.mirrored(cx, r) => {
                if self.commit_implicitly(cx, &m, seq).await? {
                    self.mirrored_ddl(cx, &m, r, &payload, &sql, seq).await?;
                }
                Ok(())
            }
            _ => {
                cx.forward(&payload, seq, Expect::ResultSet).await?;
                Ok(())
            }
        }
    }

    /// The prepared statement's text with this execute's bound values
    /// rendered in.
    fn render_execute(
        &self,
        stmts: &Statements,
        id: Option<u32>,
        payload: &[u8],
    ) -> Option<Vec<u8>> {
        let nbe = self.no_backslash_escapes;
        let p = stmts.get(&id?)?;
        let values = params::decode_params(payload, p, nbe)?;
        lexer::render_params(&p.sql, &p.param_spans, &values)
    }
}
