package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func newClient(conns int) *http.Client {
	tr := &http.Transport{
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		DisableCompression:  true,
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// body builds the publish request body for event seq published at t.
func (r *Run) body(seq int64, t float64) []byte {
	data := fmt.Sprintf(`{"seq":%d,"t":%.6f%s}`, seq, t, r.pad)
	if r.Cfg.Style == "raw" {
		return []byte(data)
	}
	return []byte(fmt.Sprintf(`{"topic":%q,"event":"tick","data":%s}`, r.Cfg.Topic, data))
}

// publishOne posts event seq and records whether it was accepted.
func (r *Run) publishOne(c *http.Client, seq int64) {
	t0 := time.Now()
	b := r.body(seq, float64(t0.UnixNano())/1e9)
	req, err := http.NewRequest(http.MethodPost, r.Cfg.BaseURL+r.Cfg.PublishPath, bytes.NewReader(b))
	if err != nil {
		r.pubErr("request")
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if r.Cfg.PublishToken != "" {
		req.Header.Set("Authorization", "Bearer "+r.Cfg.PublishToken)
	}
	resp, err := c.Do(req)
	r.PublishLatency.Add(time.Since(t0).Microseconds())
	if err != nil {
		kind := "error"
		if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
			kind = "timeout"
		}
		r.pubErr(kind)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		r.pubErr(fmt.Sprintf("status_%d", resp.StatusCode))
		return
	}
	atomic.StoreUint32(&r.accepted[seq], 1)
	r.acceptedN.Add(1)
}

func (r *Run) pubErr(kind string) {
	r.errMu.Lock()
	r.publishErrors[kind]++
	r.errMu.Unlock()
}

// publish runs for Cfg.Duration: at Cfg.Rate events/s, or, with Rate 0,
// as fast as the server accepts them over Cfg.PubConns connections.
func (r *Run) publish() {
	c := newClient(r.Cfg.PubConns)
	deadline := time.Now().Add(r.Cfg.Duration)
	var wg sync.WaitGroup
	if r.Cfg.Rate <= 0 {
		for w := 0; w < r.Cfg.PubConns; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					seq := r.nextSeq.Add(1) - 1
					if seq >= int64(len(r.accepted)) {
						return
					}
					r.publishOne(c, seq)
				}
			}()
		}
		wg.Wait()
		return
	}
	sem := make(chan struct{}, r.Cfg.PubConns)
	start := time.Now()
	interval := time.Duration(float64(time.Second) / r.Cfg.Rate)
	for k := int64(0); k < int64(len(r.accepted)); k++ {
		at := start.Add(time.Duration(k) * interval)
		if !at.Before(deadline) {
			break
		}
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{} // blocks if PubConns posts are in flight
		r.nextSeq.Store(k + 1)
		wg.Add(1)
		go func(seq int64) {
			defer wg.Done()
			r.publishOne(c, seq)
			<-sem
		}(k)
	}
	wg.Wait()
}

// pollHealth GETs /health at Cfg.HealthRate per second until stop closes.
func (r *Run) pollHealth(stop <-chan struct{}, done *sync.WaitGroup) {
	defer done.Done()
	if r.Cfg.HealthRate <= 0 {
		return
	}
	c := newClient(2)
	tick := time.NewTicker(time.Duration(float64(time.Second) / r.Cfg.HealthRate))
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		t0 := time.Now()
		resp, err := c.Get(r.Cfg.BaseURL + r.Cfg.HealthPath)
		if err != nil {
			r.healthErrors.Add(1)
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		r.HealthLatency.Add(time.Since(t0).Microseconds())
		if resp.StatusCode != 200 {
			r.healthErrors.Add(1)
		}
	}
}

func padding(n int) string {
	if n <= 0 {
		return ""
	}
	return `,"pad":"` + strings.Repeat("x", n) + `"`
}
