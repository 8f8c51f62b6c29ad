package main

// A minimal RFC 6455 client for Jobstream's GET /ws: the handshake, masked
// client frames, unmasked server frames (fragments reassembled), pings
// answered with pongs, close frames read for their code. Enough for the
// benchmark, nothing more: no extensions, no TLS.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

const (
	opCont  = 0x0
	opText  = 0x1
	opBin   = 0x2
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
)

// wsStream is one open WebSocket: the connection for writes, a buffered
// reader for frames.
type wsStream struct {
	conn net.Conn
	br   *bufio.Reader
	msg  []byte // reassembly buffer, reused
}

// closeError is the server's close frame: code and reason.
type closeError struct {
	code   int
	reason string
}

func (e *closeError) Error() string { return fmt.Sprintf("close %d %s", e.code, e.reason) }

func (e *closeError) retry() time.Duration {
	var body struct {
		RetryMs int `json:"retry_ms"`
	}
	if json.Unmarshal([]byte(e.reason), &body) == nil {
		return time.Duration(body.RetryMs) * time.Millisecond
	}
	return 0
}

// writeFrame sends one masked client frame with FIN set.
func (w *wsStream) writeFrame(op byte, payload []byte) error {
	var hdr [14]byte
	hdr[0] = 0x80 | op
	n := 2
	switch l := len(payload); {
	case l < 126:
		hdr[1] = 0x80 | byte(l)
	case l < 1<<16:
		hdr[1] = 0x80 | 126
		binary.BigEndian.PutUint16(hdr[2:], uint16(l))
		n = 4
	default:
		hdr[1] = 0x80 | 127
		binary.BigEndian.PutUint64(hdr[2:], uint64(l))
		n = 10
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	copy(hdr[n:], mask[:])
	n += 4
	frame := make([]byte, n+len(payload))
	copy(frame, hdr[:n])
	for i, b := range payload {
		frame[n+i] = b ^ mask[i&3]
	}
	_, err := w.conn.Write(frame)
	return err
}

// readFrame reads one frame; the payload is valid until the next call.
func (w *wsStream) readFrame(buf []byte) (fin bool, op byte, payload []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(w.br, h[:]); err != nil {
		return
	}
	fin, op = h[0]&0x80 != 0, h[0]&0x0F
	masked := h[1]&0x80 != 0
	l := uint64(h[1] & 0x7F)
	switch l {
	case 126:
		var b [2]byte
		if _, err = io.ReadFull(w.br, b[:]); err != nil {
			return
		}
		l = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err = io.ReadFull(w.br, b[:]); err != nil {
			return
		}
		l = binary.BigEndian.Uint64(b[:])
	}
	if l > 64<<20 {
		err = errors.New("frame too large")
		return
	}
	var mask [4]byte
	if masked { // servers must not mask; undo it anyway
		if _, err = io.ReadFull(w.br, mask[:]); err != nil {
			return
		}
	}
	if uint64(cap(buf)) < l {
		buf = make([]byte, l)
	}
	payload = buf[:l]
	if _, err = io.ReadFull(w.br, payload); err != nil {
		return
	}
	if masked {
		for i := range payload {
			payload[i] ^= mask[i&3]
		}
	}
	return
}

// readMessage returns the next text or binary message, answering pings and
// turning a close frame into a *closeError.
func (w *wsStream) readMessage() ([]byte, error) {
	w.msg = w.msg[:0]
	frame := make([]byte, 0, 512)
	for {
		fin, op, payload, err := w.readFrame(frame)
		if err != nil {
			return nil, err
		}
		switch op {
		case opPing:
			if err := w.writeFrame(opPong, payload); err != nil {
				return nil, err
			}
			continue
		case opPong:
			continue
		case opClose:
			ce := &closeError{code: 1005}
			if len(payload) >= 2 {
				ce.code = int(binary.BigEndian.Uint16(payload))
				ce.reason = string(payload[2:])
			}
			return nil, ce
		case opText, opBin, opCont:
			w.msg = append(w.msg, payload...)
			if fin {
				return w.msg, nil
			}
		default:
			return nil, fmt.Errorf("unknown opcode %d", op)
		}
	}
}

// wsField returns the string value of "name":"..." in a flat JSON message
// (Jobstream's ids, types and topics need no escapes).
func wsField(msg []byte, name string) string {
	key := []byte(`"` + name + `":"`)
	i := bytes.Index(msg, key)
	if i < 0 {
		return ""
	}
	rest := msg[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// openWS dials, upgrades, subscribes to cfg.Topic (resuming after lastID)
// and waits for the pong to a ping sent after the subscribe: the server
// handles a socket's messages in order, so the pong means the subscription
// is in place. It returns the stream as the "body" that read consumes.
func (s *Sub) openWS(cfg *Config, lastID string) (io.Reader, string, time.Duration, error) {
	d := net.Dialer{Timeout: cfg.ConnectTimeout}
	conn, err := d.Dial("tcp", cfg.Addr)
	if err != nil {
		return nil, classify(err), 0, err
	}
	_ = conn.SetDeadline(time.Now().Add(cfg.ConnectTimeout))
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	var req bytes.Buffer
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", cfg.StreamPath, cfg.Addr, key)
	if len(cfg.StreamTokens) > 0 {
		fmt.Fprintf(&req, "Authorization: Bearer %s\r\n", cfg.StreamTokens[s.idx%len(cfg.StreamTokens)])
	}
	req.WriteString("\r\n")
	fail := func(kind string, retry time.Duration, err error) (io.Reader, string, time.Duration, error) {
		conn.Close()
		return nil, kind, retry, err
	}
	if _, err = conn.Write(req.Bytes()); err != nil {
		return fail(classify(err), 0, err)
	}
	br := bufio.NewReaderSize(conn, 16384)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fail(classify(err), 0, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		return fail(fmt.Sprintf("status_%d", resp.StatusCode), time.Duration(ra)*time.Second,
			fmt.Errorf("status %d", resp.StatusCode))
	}
	sum := sha1.Sum([]byte(key + wsGUID))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		return fail("bad_accept", 0, errors.New("bad Sec-WebSocket-Accept"))
	}
	w := &wsStream{conn: conn, br: br}
	sub := map[string]interface{}{"type": "subscribe", "topics": []string{cfg.Topic}}
	if lastID != "" {
		sub["last_event_id"] = lastID
	}
	msg, _ := json.Marshal(sub)
	if err = w.writeFrame(opText, msg); err != nil {
		return fail(classify(err), 0, err)
	}
	if err = w.writeFrame(opText, []byte(`{"type":"ping"}`)); err != nil {
		return fail(classify(err), 0, err)
	}
	// Replayed events may come before the pong: they are kept for read.
	var early [][]byte
	for {
		m, err := w.readMessage()
		if err != nil {
			var ce *closeError
			if errors.As(err, &ce) {
				return fail(fmt.Sprintf("close_%d", ce.code), ce.retry(), err)
			}
			return fail(classify(err), 0, err)
		}
		t := wsField(m, "type")
		if t == "pong" {
			break
		}
		if t == "error" {
			return fail("ws_error", 0, fmt.Errorf("server said: %s", m))
		}
		early = append(early, append([]byte(nil), m...))
	}
	_ = conn.SetDeadline(time.Time{})
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	return &wsBody{w: w, early: early}, "", 0, nil
}

// wsBody is what openWS hands to read: the stream and the messages that
// arrived before the subscription was confirmed.
type wsBody struct {
	w     *wsStream
	early [][]byte
}

// Read makes wsBody an io.Reader for Sub.open's signature; never called.
func (b *wsBody) Read([]byte) (int, error) { return 0, errors.New("wsBody is not read as bytes") }

// readWS consumes one WebSocket until it ends, with the same bookkeeping
// as the SSE reader: latency = receive time - the "t" in the event's data.
func (s *Sub) readWS(r *Run, b *wsBody) error {
	hist := r.Latency
	if s.staller {
		hist = r.StallLatency
	}
	for {
		var msg []byte
		if len(b.early) > 0 {
			msg, b.early = b.early[0], b.early[1:]
		} else {
			if s.staller && r.stallDue() {
				time.Sleep(r.Cfg.StallFor)
			}
			m, err := b.w.readMessage()
			if err != nil {
				return err
			}
			msg = m
		}
		switch wsField(msg, "type") {
		case "event":
			i := bytes.Index(msg, []byte(`"data":`))
			if i < 0 {
				continue
			}
			seq, t, ok := parseData(msg[i:])
			if !ok {
				continue
			}
			now := float64(time.Now().UnixNano()) / 1e9
			id := wsField(msg, "id")
			if s.mark(seq) {
				if id != "" {
					s.checkOrder(id)
				}
				hist.Add(int64((now - t) * 1e6))
				if !s.staller {
					r.delivered.Add(1)
				} else {
					r.stallDelivered.Add(1)
				}
				r.lastDelivery.Store(time.Now().UnixNano())
			}
			if id != "" {
				s.lastID = id
			}
		case "reset":
			r.resets.Add(1)
		}
	}
}
