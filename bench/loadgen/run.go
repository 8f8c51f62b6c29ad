package main

import (
	"sync"
	"sync/atomic"
	"time"
)

// Run holds the shared state of one load-generator invocation.
type Run struct {
	Cfg            *Config
	subs           []*Sub
	pad            string
	Latency        *Hist
	StallLatency   *Hist
	PublishLatency *Hist
	HealthLatency  *Hist
	ConnectLatency *Hist
	accepted       []uint32
	acceptedN      atomic.Int64
	nextSeq        atomic.Int64
	delivered      atomic.Int64
	stallDelivered atomic.Int64
	lastDelivery   atomic.Int64
	pubStart       atomic.Int64
	stopping       atomic.Bool
	healthErrors   atomic.Int64
	resets         atomic.Int64
	errMu          sync.Mutex
	publishErrors  map[string]int
	connectErrors  map[string]int
	reconnErrors   map[string]int
	lastReconnect  atomic.Int64 // unix ns of the latest successful reconnect
	readers        sync.WaitGroup
	startWall      time.Time
	drainSecs      float64
}

func newRun(cfg *Config) *Run {
	r := &Run{
		Cfg: cfg, pad: padding(cfg.Pad),
		Latency: &Hist{}, StallLatency: &Hist{}, PublishLatency: &Hist{},
		HealthLatency: &Hist{}, ConnectLatency: &Hist{},
		publishErrors: map[string]int{}, connectErrors: map[string]int{}, reconnErrors: map[string]int{},
		startWall: time.Now(),
	}
	if cfg.Duration > 0 {
		n := cfg.MaxEvents
		if cfg.Rate > 0 && int(cfg.Rate*cfg.Duration.Seconds())+1 < n {
			n = int(cfg.Rate*cfg.Duration.Seconds()) + 1
		}
		r.accepted = make([]uint32, n)
	}
	nNever := int(float64(cfg.N) * cfg.NeverReadPct / 100)
	nStall := int(float64(cfg.N) * cfg.StallPct / 100)
	for i := 0; i < cfg.N; i++ {
		s := newSub(i)
		// spread special clients evenly over the connection order
		if nNever > 0 && i%(cfg.N/nNever) == 0 && i/(cfg.N/nNever) < nNever {
			s.neverRead = true
		} else if nStall > 0 && i%(cfg.N/nStall) == 1 && i/(cfg.N/nStall) < nStall {
			s.staller = true
		}
		r.subs = append(r.subs, s)
	}
	return r
}

func (r *Run) stallDue() bool {
	ps := r.pubStart.Load()
	return ps != 0 && time.Now().UnixNano() >= ps+int64(r.Cfg.StallAt) &&
		time.Now().UnixNano() < ps+int64(r.Cfg.StallAt)+int64(r.Cfg.StallFor)
}

// connectAll opens every stream (ConnectConc at a time) and reports rate
// and failures by kind.
func (r *Run) connectAll() map[string]interface{} {
	sem := make(chan struct{}, r.Cfg.ConnectConc)
	var wg sync.WaitGroup
	var ok, lastNs atomic.Int64
	var mu sync.Mutex
	t0 := time.Now()
	for _, s := range r.subs {
		sem <- struct{}{}
		wg.Add(1)
		go func(s *Sub) {
			defer wg.Done()
			c0 := time.Now()
			body, kind, _, err := s.open(r.Cfg, "")
			<-sem
			if err != nil {
				mu.Lock()
				r.connectErrors[kind]++
				mu.Unlock()
				return
			}
			r.ConnectLatency.Add(time.Since(c0).Microseconds())
			s.connected = true
			ok.Add(1)
			lastNs.Store(time.Now().UnixNano())
			if s.neverRead {
				return
			}
			r.readers.Add(1)
			go func() {
				defer r.readers.Done()
				s.serve(r, body)
			}()
		}(s)
	}
	wg.Wait()
	secs := time.Since(t0).Seconds()
	if l := lastNs.Load(); l > 0 {
		secs = float64(l-t0.UnixNano()) / 1e9
	}
	rate := 0.0
	if secs > 0 {
		rate = float64(ok.Load()) / secs
	}
	return map[string]interface{}{
		"phase": "connected", "n": r.Cfg.N, "connected": ok.Load(),
		"connect_failures": r.connectErrors, "connect_seconds": secs,
		"connect_rate": rate, "connect_ms": r.ConnectLatency.Summary(),
	}
}

// publishAndDrain publishes for the configured duration, then waits for
// outstanding deliveries; returns the publish phase length in seconds.
func (r *Run) publishAndDrain() float64 {
	stop := make(chan struct{})
	var hw sync.WaitGroup
	hw.Add(1)
	go r.pollHealth(stop, &hw)
	t0 := time.Now()
	r.pubStart.Store(t0.UnixNano())
	r.publish()
	pubSecs := time.Since(t0).Seconds()
	readers := int64(0)
	stallers := int64(0)
	for _, s := range r.subs {
		if !s.connected {
			continue
		} else if s.staller {
			stallers++
		} else if !s.neverRead {
			readers++
		}
	}
	// Drain: until every reader has every accepted event, or deliveries
	// stop progressing for 2 s (plus any stall), or Cfg.Drain passes.
	deadline := time.Now().Add(r.Cfg.Drain)
	idle := 2 * time.Second
	if r.Cfg.StallPct > 0 {
		idle += r.Cfg.StallFor
	}
	last, lastChange := int64(-1), time.Now()
	for time.Now().Before(deadline) {
		want := r.acceptedN.Load()
		got, gotStall := r.delivered.Load(), r.stallDelivered.Load()
		if got >= want*readers && gotStall >= want*stallers {
			break
		}
		if got+gotStall != last {
			last, lastChange = got+gotStall, time.Now()
		} else if time.Since(lastChange) > idle {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.drainSecs = time.Since(t0).Seconds() - pubSecs
	close(stop)
	hw.Wait()
	return pubSecs
}

func (r *Run) stop() {
	r.stopping.Store(true)
	for _, s := range r.subs {
		s.close()
	}
	done := make(chan struct{})
	go func() { r.readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}
