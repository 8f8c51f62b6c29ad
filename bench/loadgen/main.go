// Command loadgen drives an SSE (or Jobstream WebSocket) server for the Jobstream benchmarks:
// it opens N streams, publishes timestamped events over HTTP and
// measures per-delivery latency, losses, duplicates and order.
// Stdlib only; prints JSON lines on stdout (a "connected" line, then
// a "done" line).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
)

type Config struct {
	BaseURL        string
	Addr           string
	StreamPath     string
	PublishPath    string
	HealthPath     string
	Style          string // "jobstream" (topic/event/data envelope) or "raw"
	Transport      string // "sse" (GET StreamPath) or "ws" (WebSocket at StreamPath, subscribe to Topic)
	Topic          string
	N              int
	NeverReadPct   float64
	StallPct       float64
	StallAt        time.Duration
	StallFor       time.Duration
	Reconnect      bool
	HonorRetry     bool // wait the server's retry: before reconnecting, as EventSource does
	Rate           float64
	Duration       time.Duration
	PubConns       int
	MaxEvents      int
	Pad            int
	HealthRate     float64
	Drain          time.Duration
	ConnectConc    int
	ConnectTimeout time.Duration
	WaitStdin      bool
	Verbose        bool
	StreamTokens   []string // Bearer tokens: stream i sends StreamTokens[i % len]
	PublishToken   string   // Bearer token for publishing ("" sends none)
}

func parseFlags() *Config {
	c := &Config{}
	flag.StringVar(&c.BaseURL, "url", "http://127.0.0.1:8000", "server base URL (127.0.0.1 only)")
	flag.StringVar(&c.StreamPath, "stream", "/stream?topic=bench", "subscribe path")
	flag.StringVar(&c.PublishPath, "publish", "/events", "publish path")
	flag.StringVar(&c.HealthPath, "health", "/health", "health path")
	flag.StringVar(&c.Style, "style", "jobstream", "publish body style: jobstream|raw")
	flag.StringVar(&c.Topic, "topic", "bench", "topic for jobstream-style bodies (and the WebSocket subscribe)")
	flag.StringVar(&c.Transport, "transport", "sse", "sse|ws: EventSource-like streams or Jobstream /ws WebSockets")
	flag.IntVar(&c.N, "n", 100, "number of SSE connections")
	flag.Float64Var(&c.NeverReadPct, "never-read-pct", 0, "percent of connections that never read")
	flag.Float64Var(&c.StallPct, "stall-pct", 0, "percent of connections that stall once")
	flag.DurationVar(&c.StallAt, "stall-at", time.Second, "stall starts this long after publishing starts")
	flag.DurationVar(&c.StallFor, "stall-for", 3*time.Second, "stall length")
	flag.BoolVar(&c.Reconnect, "reconnect", false, "reconnect with Last-Event-ID when a stream ends")
	flag.BoolVar(&c.HonorRetry, "honor-retry", false, "wait the stream's last retry: (not 100 ms) before reconnecting")
	flag.Float64Var(&c.Rate, "rate", 0, "events/s to publish (0 = as fast as accepted)")
	flag.DurationVar(&c.Duration, "duration", 0, "publish duration (0 = no publishing)")
	flag.IntVar(&c.PubConns, "pub-conns", 8, "concurrent publish requests")
	flag.IntVar(&c.MaxEvents, "max-events", 2000000, "cap on published events")
	flag.IntVar(&c.Pad, "pad", 0, "extra bytes of padding in each event's data")
	flag.Float64Var(&c.HealthRate, "health-rate", 0, "GET /health per second while publishing")
	flag.DurationVar(&c.Drain, "drain", 30*time.Second, "max wait for deliveries after publishing (ends early after 2 s without progress)")
	flag.IntVar(&c.ConnectConc, "connect-conc", 256, "connects in flight at once")
	flag.DurationVar(&c.ConnectTimeout, "connect-timeout", 10*time.Second, "per-connect timeout")
	flag.BoolVar(&c.WaitStdin, "wait-stdin", false, "after connecting, wait for a stdin line before going on")
	flag.BoolVar(&c.Verbose, "v", false, "log stream ends to stderr")
	streamTokens := flag.String("stream-tokens", "", "file of Bearer tokens, one a line, for the streams (one per stream, reused round-robin)")
	publishToken := flag.String("publish-token", "", "file holding the Bearer token for publishing")
	flag.Parse()
	u, err := url.Parse(c.BaseURL)
	if err != nil || u.Hostname() != "127.0.0.1" {
		fmt.Fprintln(os.Stderr, "loadgen: -url must target 127.0.0.1")
		os.Exit(2)
	}
	c.Addr = u.Host
	if c.Transport != "sse" && c.Transport != "ws" {
		fmt.Fprintln(os.Stderr, "loadgen: -transport must be sse or ws")
		os.Exit(2)
	}
	c.StreamTokens = readTokens(*streamTokens)
	if t := readTokens(*publishToken); len(t) > 0 {
		c.PublishToken = t[0]
	}
	return c
}

// readTokens reads one token a line from path ("" reads none). Files, not
// flags: a token on the command line shows in ps.
func readTokens(path string) []string {
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	return strings.Fields(string(b))
}

func raiseNofile() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	want := uint64(200000)
	if lim.Max < want {
		lim.Max = want // works as root; otherwise fall back to the old hard limit
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}) == nil {
			return
		}
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	lim.Cur = lim.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

func emit(v map[string]interface{}) {
	b, _ := json.Marshal(v)
	os.Stdout.Write(append(b, '\n'))
}

func main() {
	cfg := parseFlags()
	raiseNofile()
	r := newRun(cfg)
	conn := r.connectAll()
	emit(conn)
	if cfg.WaitStdin {
		waitLine(120 * time.Second)
	}
	var pubSecs float64
	if cfg.Duration > 0 {
		time.Sleep(300 * time.Millisecond) // let subscriptions settle
		pubSecs = r.publishAndDrain()
	}
	r.stop()
	out := r.result(pubSecs)
	for k, v := range conn {
		if k != "phase" {
			out[k] = v
		}
	}
	emit(out)
}

func waitLine(max time.Duration) {
	got := make(chan struct{})
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		close(got)
	}()
	select {
	case <-got:
	case <-time.After(max):
	}
}
