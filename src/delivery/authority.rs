//! Lets HTTP/2 clients that send a Unix socket's path as `:authority` talk to
//! pillion's gRPC servers.
//!
//! gRPC's C core (Python, C++, Ruby: py-spiffe among them) and grpc-java
//! send the socket path, percent-encoded, as the request's `:authority`.
//! That is not a valid authority, and the h2 crate refuses the request with
//! a PROTOCOL_ERROR before any service sees it (hyperium/h2#487, open). The
//! authority of a Unix socket means nothing, so this shim, between the
//! socket and the HTTP/2 server, replaces the value of every literal
//! `:authority` field the client sends with `localhost` (cut to the
//! original's length at most, so that HPACK's dynamic table on the server
//! never holds more than the client's: indices stay in step). Everything
//! else passes byte for byte; what it cannot parse it passes unchanged.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame h2 accepts by default (SETTINGS_MAX_FRAME_SIZE).
const MAX_FRAME: usize = 16_384;
/// A header block held for its CONTINUATION frames may grow this far.
const MAX_BLOCK: usize = 1 << 20;

/// The stream for the HTTP/2 server: `socket`'s bytes, with `:authority`
/// values rewritten on the way in; the server's bytes go out as they are.
pub fn shim<S>(socket: S) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (server_side, ours) = tokio::io::duplex(64 * 1024);
    let (mut from_client, mut to_client) = tokio::io::split(socket);
    let (mut from_server, mut to_server) = tokio::io::split(ours);
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        let _ = to_client.shutdown().await;
    });
    tokio::spawn(async move {
        let _ = rewrite(&mut from_client, &mut to_server).await;
        let _ = to_server.shutdown().await;
    });
    server_side
}

/// A HEADERS frame waiting for its CONTINUATIONs: its flags, stream,
/// priority bytes and the block so far.
type Held = (u8, [u8; 4], Vec<u8>, Vec<u8>);

/// Copies the client's frames, rewriting the header blocks.
async fn rewrite<R, W>(from: &mut R, to: &mut W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    if &preface != PREFACE {
        // Not HTTP/2: let the server say so.
        tokio::io::copy(from, to).await?;
        return Ok(());
    }
    let mut held: Option<Held> = None;
    loop {
        let mut head = [0u8; 9];
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        if len > MAX_FRAME {
            // Larger than the server allows (SETTINGS_MAX_FRAME_SIZE): a protocol error, and
            // no reason to hold 16 MiB for it.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame too large",
            ));
        }
        let (kind, flags) = (head[3], head[4]);
        let stream: [u8; 4] = [head[5], head[6], head[7], head[8]];
        let mut payload = vec![0u8; len];
        from.read_exact(&mut payload).await?;
        match (kind, held.take()) {
            (HEADERS, None) => {
                let Some((priority, fragment)) = split_headers(flags, &payload) else {
                    to.write_all(&head).await?;
                    to.write_all(&payload).await?;
                    continue;
                };
                if flags & END_HEADERS != 0 {
                    emit(to, flags, stream, &priority, &rewrite_block(&fragment)).await?;
                } else {
                    held = Some((flags, stream, priority, fragment));
                }
            }
            (CONTINUATION, Some((first, s, priority, mut block))) if s == stream => {
                block.extend_from_slice(&payload);
                if block.len() > MAX_BLOCK {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "header block too large",
                    ));
                }
                if flags & END_HEADERS != 0 {
                    emit(to, first, stream, &priority, &rewrite_block(&block)).await?;
                } else {
                    held = Some((first, s, priority, block));
                }
            }
            (_, Some((first, s, priority, block))) => {
                // A protocol error by the client: pass it all on for the
                // server to answer.
                emit_raw(to, first & !END_HEADERS, s, &priority, &block).await?;
                to.write_all(&head).await?;
                to.write_all(&payload).await?;
            }
            _ => {
                to.write_all(&head).await?;
                to.write_all(&payload).await?;
            }
        }
    }
}

/// A HEADERS payload's priority bytes and header block fragment, without
/// padding; `None` when it is malformed.
fn split_headers(flags: u8, payload: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut body = payload;
    if flags & PADDED != 0 {
        let pad = *body.first()? as usize;
        body = body.get(1..body.len().checked_sub(pad)?)?;
    }
    let (priority, fragment) = match flags & PRIORITY != 0 {
        true => (body.get(..5)?, body.get(5..)?),
        false => (&[][..], body),
    };
    Some((priority.to_vec(), fragment.to_vec()))
}

/// Writes a header block as a HEADERS frame (no padding), then
/// CONTINUATION frames for what does not fit.
async fn emit<W: AsyncWrite + Unpin>(
    to: &mut W,
    flags: u8,
    stream: [u8; 4],
    priority: &[u8],
    block: &[u8],
) -> io::Result<()> {
    let first_room = MAX_FRAME - priority.len();
    let (first, rest) = block.split_at(block.len().min(first_room));
    let chunks: Vec<&[u8]> = rest.chunks(MAX_FRAME).collect();
    let mut frame_flags = flags & !(PADDED | END_HEADERS);
    if chunks.is_empty() {
        frame_flags |= END_HEADERS;
    }
    let mut payload = priority.to_vec();
    payload.extend_from_slice(first);
    write_frame(to, HEADERS, frame_flags, stream, &payload).await?;
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        write_frame(
            to,
            CONTINUATION,
            if last { END_HEADERS } else { 0 },
            stream,
            chunk,
        )
        .await?;
    }
    Ok(())
}

/// Writes a held HEADERS frame back as it came (without its padding).
async fn emit_raw<W: AsyncWrite + Unpin>(
    to: &mut W,
    flags: u8,
    stream: [u8; 4],
    priority: &[u8],
    block: &[u8],
) -> io::Result<()> {
    let mut payload = priority.to_vec();
    payload.extend_from_slice(block);
    write_frame(to, HEADERS, flags & !PADDED, stream, &payload).await
}

async fn write_frame<W: AsyncWrite + Unpin>(
    to: &mut W,
    kind: u8,
    flags: u8,
    stream: [u8; 4],
    payload: &[u8],
) -> io::Result<()> {
    let len = (payload.len() as u32).to_be_bytes();
    let head = [
        len[1], len[2], len[3], kind, flags, stream[0], stream[1], stream[2], stream[3],
    ];
    to.write_all(&head).await?;
    to.write_all(payload).await
}

/// An HPACK integer with an `n`-bit prefix at `at` (RFC 7541 5.1): its value
/// and the offset after it.
fn integer(block: &[u8], at: usize, n: u32) -> Option<(usize, usize)> {
    let max = (1usize << n) - 1;
    let mut value = (*block.get(at)? as usize) & max;
    let mut i = at + 1;
    if value < max {
        return Some((value, i));
    }
    let mut shift = 0;
    loop {
        let b = *block.get(i)? as usize;
        i += 1;
        value = value.checked_add((b & 0x7f).checked_shl(shift)?)?;
        shift += 7;
        if b & 0x80 == 0 || shift > 28 {
            return (b & 0x80 == 0).then_some((value, i));
        }
    }
}

/// An HPACK string literal at `at`: whether it is Huffman-coded, its bytes'
/// range, and the offset after it.
fn string(block: &[u8], at: usize) -> Option<(bool, std::ops::Range<usize>)> {
    let huffman = *block.get(at)? & 0x80 != 0;
    let (len, start) = integer(block, at, 7)?;
    let end = start.checked_add(len)?;
    (end <= block.len()).then_some((huffman, start..end))
}

/// The header block with every literal `:authority` value replaced (see the
/// module's documentation); the block unchanged if it does not parse.
fn rewrite_block(block: &[u8]) -> Vec<u8> {
    try_rewrite(block).unwrap_or_else(|| block.to_vec())
}

fn try_rewrite(block: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(block.len());
    let mut at = 0;
    while at < block.len() {
        let b = block[at];
        let (prefix, first) = match b {
            _ if b & 0x80 != 0 => {
                let (_, end) = integer(block, at, 7)?;
                out.extend_from_slice(&block[at..end]);
                at = end;
                continue;
            }
            _ if b & 0xe0 == 0x20 => {
                let (_, end) = integer(block, at, 5)?;
                out.extend_from_slice(&block[at..end]);
                at = end;
                continue;
            }
            _ if b & 0xc0 == 0x40 => (6, b & 0xc0),
            _ => (4, b & 0xf0),
        };
        let (name_index, mut end) = integer(block, at, prefix)?;
        let mut is_authority = name_index == 1;
        if name_index == 0 {
            let (huffman, name) = string(block, end)?;
            is_authority = !huffman && &block[name.clone()] == b":authority";
            end = name.end;
        }
        let (huffman, value) = string(block, end)?;
        if !is_authority || value.is_empty() {
            out.extend_from_slice(&block[at..value.end]);
            at = value.end;
            continue;
        }
        // The shortest the value can be decoded to: a Huffman code takes at
        // most 30 bits per character.
        let decoded_at_least = match huffman {
            true => (value.len() * 8).div_ceil(30),
            false => value.len(),
        };
        let replacement = &b"localhost"[..decoded_at_least.clamp(1, 9)];
        out.extend_from_slice(&block[at..end]);
        let _ = first;
        out.push(replacement.len() as u8);
        out.extend_from_slice(replacement);
        at = value.end;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_literal_authority_becomes_localhost_and_the_rest_stays() {
        // :method POST (static 3), :authority "tmp%2Fa.sock" with incremental
        // indexing (name: static 1), a literal header "te: trailers" without
        // indexing (literal name), then an indexed field.
        let mut block = vec![0x83, 0x41, 12];
        block.extend_from_slice(b"tmp%2Fa.sock");
        block.extend_from_slice(&[0x00, 2, b't', b'e', 8]);
        block.extend_from_slice(b"trailers");
        block.push(0xbe);
        let out = rewrite_block(&block);
        let mut want = vec![0x83, 0x41, 9];
        want.extend_from_slice(b"localhost");
        want.extend_from_slice(&block[15..]);
        assert_eq!(out, want);
        // A short path gets a value no longer than its own.
        let out = rewrite_block(&[0x41, 3, b'/', b'a', b'b']);
        assert_eq!(out, [0x41, 3, b'l', b'o', b'c']);
        // A literal name ":authority", never indexed.
        let mut block = vec![0x10, 10];
        block.extend_from_slice(b":authority");
        block.extend_from_slice(&[0x80 | 4, 1, 2, 3, 4]);
        let out = rewrite_block(&block);
        assert_eq!(&out[..12], &block[..12]);
        assert_eq!(&out[12..], [2, b'l', b'o']);
        // What does not parse passes unchanged.
        assert_eq!(rewrite_block(&[0x41, 50, b'x']), [0x41, 50, b'x']);
    }

    #[tokio::test]
    async fn frames_pass_and_headers_are_rewritten_across_continuations() {
        let mut input = PREFACE.to_vec();
        // SETTINGS (empty), HEADERS without END_HEADERS, CONTINUATION with it.
        input.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        let block = [0x41, 4, b'%', b'2', b'F', b'x'];
        input.extend_from_slice(&[0, 0, 3, HEADERS, 0, 0, 0, 0, 1]);
        input.extend_from_slice(&block[..3]);
        input.extend_from_slice(&[0, 0, 3, CONTINUATION, END_HEADERS, 0, 0, 0, 1]);
        input.extend_from_slice(&block[3..]);
        let mut out = Vec::new();
        rewrite(&mut input.as_slice(), &mut out).await.unwrap();
        let mut want = PREFACE.to_vec();
        want.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[0, 0, 6, HEADERS, END_HEADERS, 0, 0, 0, 1]);
        want.extend_from_slice(&[0x41, 4, b'l', b'o', b'c', b'a']);
        assert_eq!(out, want);
    }
}
