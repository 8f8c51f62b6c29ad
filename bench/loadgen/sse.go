package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Sub is one SSE connection with its own delivery bookkeeping.
type Sub struct {
	idx        int
	neverRead  bool // connect, then never read a byte of the body
	staller    bool // stops reading for a while once publishing starts
	connected  bool // its first connect succeeded (else it counts as a connect failure)
	mu         sync.Mutex
	conn       net.Conn
	seen       []uint64 // bitset of received seq numbers
	maxSeq     int64
	recv       int64 // unique deliveries
	dups       int64
	ooo        int64
	lastID     string
	lastKey    []int64 // numbers in the last event id, for the order check
	ends       int64   // stream ended by the server while running
	reconnects int64
	reconnFail int64
	retry      time.Duration // the stream's last retry: field
}

func newSub(i int) *Sub { return &Sub{idx: i, maxSeq: -1} }

// classify maps a connect error to a short failure kind for the report.
func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "fd_limit"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no_ports"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}

// open dials, sends the GET and waits for the response headers.
// It returns the body reader, or a failure kind and error.
// With cfg.Transport "ws" it opens a WebSocket instead (see openWS).
func (s *Sub) open(cfg *Config, lastID string) (io.Reader, string, time.Duration, error) {
	if cfg.Transport == "ws" {
		return s.openWS(cfg, lastID)
	}
	d := net.Dialer{Timeout: cfg.ConnectTimeout}
	conn, err := d.Dial("tcp", cfg.Addr)
	if err != nil {
		return nil, classify(err), 0, err
	}
	_ = conn.SetDeadline(time.Now().Add(cfg.ConnectTimeout))
	var req bytes.Buffer
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n", cfg.StreamPath, cfg.Addr)
	if lastID != "" {
		fmt.Fprintf(&req, "Last-Event-ID: %s\r\n", lastID)
	}
	if len(cfg.StreamTokens) > 0 {
		fmt.Fprintf(&req, "Authorization: Bearer %s\r\n", cfg.StreamTokens[s.idx%len(cfg.StreamTokens)])
	}
	req.WriteString("\r\n")
	if _, err = conn.Write(req.Bytes()); err != nil {
		conn.Close()
		return nil, classify(err), 0, err
	}
	br := bufio.NewReaderSize(conn, 16384)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, classify(err), 0, err
	}
	if resp.StatusCode != 200 {
		conn.Close()
		ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		return nil, fmt.Sprintf("status_%d", resp.StatusCode), time.Duration(ra) * time.Second,
			fmt.Errorf("status %d", resp.StatusCode)
	}
	_ = conn.SetDeadline(time.Time{})
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	return resp.Body, "", 0, nil
}

func (s *Sub) close() {
	s.mu.Lock()
	if s.conn != nil {
		s.conn.Close()
	}
	s.mu.Unlock()
}

// mark records one delivered seq; returns true if it was new.
func (s *Sub) mark(seq int64) bool {
	w := int(seq >> 6)
	for w >= len(s.seen) {
		s.seen = append(s.seen, make([]uint64, len(s.seen)+64)...)
	}
	bit := uint64(1) << uint(seq&63)
	if s.seen[w]&bit != 0 {
		s.dups++
		return false
	}
	s.seen[w] |= bit
	if seq > s.maxSeq {
		s.maxSeq = seq
	}
	s.recv++
	return true
}

// idKey extracts the integers of an event id ("1732800000123-17",
// nchan's "1732800000:3") so that ids can be compared in order.
func idKey(id string, buf []int64) []int64 {
	buf = buf[:0]
	var cur int64
	in := false
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c >= '0' && c <= '9' {
			cur = cur*10 + int64(c-'0')
			in = true
		} else if in {
			buf = append(buf, cur)
			cur, in = 0, false
		}
	}
	if in {
		buf = append(buf, cur)
	}
	return buf
}

// checkOrder counts an event whose server id is lower than the previous one.
func (s *Sub) checkOrder(id string) {
	key := idKey(id, nil)
	for i := 0; i < len(key) && i < len(s.lastKey); i++ {
		if key[i] != s.lastKey[i] {
			if key[i] < s.lastKey[i] {
				s.ooo++
			}
			break
		}
	}
	s.lastKey = key
}

func (s *Sub) has(seq int64) bool {
	w := int(seq >> 6)
	return w < len(s.seen) && s.seen[w]&(uint64(1)<<uint(seq&63)) != 0
}

// parseData pulls seq and t out of `{"seq":17,"t":1732800000.123456,...}`.
func parseData(b []byte) (int64, float64, bool) {
	i := bytes.Index(b, []byte(`"seq":`))
	j := bytes.Index(b, []byte(`"t":`))
	if i < 0 || j < 0 {
		return 0, 0, false
	}
	num := func(p []byte) []byte {
		p = bytes.TrimLeft(p, " ")
		k := 0
		for k < len(p) && (p[k] == '.' || p[k] == '-' || p[k] == 'e' || p[k] == 'E' || p[k] == '+' || (p[k] >= '0' && p[k] <= '9')) {
			k++
		}
		return p[:k]
	}
	seq, err1 := strconv.ParseInt(string(num(b[i+6:])), 10, 64)
	t, err2 := strconv.ParseFloat(string(num(b[j+4:])), 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return seq, t, true
}

// read consumes one stream until it ends; returns the read error.
func (s *Sub) read(r *Run, body io.Reader) error {
	if b, ok := body.(*wsBody); ok {
		return s.readWS(r, b)
	}
	br := bufio.NewReaderSize(body, 16384)
	var curID, curEvent string
	var data []byte
	hist := r.Latency
	if s.staller {
		hist = r.StallLatency
	}
	for {
		if s.staller && r.stallDue() {
			time.Sleep(r.Cfg.StallFor)
		}
		line, err := br.ReadSlice('\n')
		if err != nil {
			if err == bufio.ErrBufferFull {
				continue // over-long line: ignore its head
			}
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
			if curEvent == "reset" { // server-declared gap: events were dropped
				r.resets.Add(1)
			}
			curEvent = ""
			if data != nil {
				if seq, t, ok := parseData(data); ok {
					now := float64(time.Now().UnixNano()) / 1e9
					if s.mark(seq) {
						if curID != "" {
							s.checkOrder(curID)
						}
						hist.Add(int64((now - t) * 1e6))
						if !s.staller {
							r.delivered.Add(1)
						} else {
							r.stallDelivered.Add(1)
						}
						r.lastDelivery.Store(time.Now().UnixNano())
					}
				}
				if curID != "" {
					s.lastID = curID
				}
			}
			data = nil
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("event:")):
			curEvent = strings.TrimSpace(string(line[6:]))
		case bytes.HasPrefix(line, []byte("retry:")):
			if ms, err := strconv.Atoi(strings.TrimSpace(string(line[6:]))); err == nil {
				s.retry = time.Duration(ms) * time.Millisecond
			}
		case bytes.HasPrefix(line, []byte("id:")):
			curID = strings.TrimSpace(string(line[3:]))
		case bytes.HasPrefix(line, []byte("data:")):
			d := bytes.TrimPrefix(line[5:], []byte(" "))
			data = append(data[:0:0], d...)
		}
	}
}

// serve keeps the subscription alive until the run stops, reconnecting
// with Last-Event-ID when the server ends the stream (if enabled).
func (s *Sub) serve(r *Run, body io.Reader) {
	for {
		err := s.read(r, body)
		if r.stopping.Load() {
			return
		}
		atomic.AddInt64(&s.ends, 1)
		if r.Cfg.Verbose {
			fmt.Fprintf(os.Stderr, "sub %d ended: %v\n", s.idx, err)
		}
		if !r.Cfg.Reconnect {
			return
		}
		body = nil
		wait := 100 * time.Millisecond
		if r.Cfg.HonorRetry && s.retry > 0 {
			wait = s.retry
		}
		for body == nil && !r.stopping.Load() {
			time.Sleep(wait)
			wait = 100 * time.Millisecond
			b, kind, retry, err := s.open(r.Cfg, s.lastID)
			if err != nil {
				atomic.AddInt64(&s.reconnFail, 1)
				r.errMu.Lock()
				r.reconnErrors[kind]++
				r.errMu.Unlock()
				if retry > time.Second {
					retry = time.Second
				}
				time.Sleep(retry)
				continue
			}
			atomic.AddInt64(&s.reconnects, 1)
			for now, last := time.Now().UnixNano(), r.lastReconnect.Load(); now > last; last = r.lastReconnect.Load() {
				if r.lastReconnect.CompareAndSwap(last, now) {
					break
				}
			}
			body = b
		}
		if body == nil {
			return
		}
	}
}
