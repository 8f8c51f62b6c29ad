package main

import (
	"sync/atomic"
	"syscall"
	"time"
)

// result tallies deliveries against accepted publishes for every reader.
func (r *Run) result(pubSecs float64) map[string]interface{} {
	var lost, lostStall, dups, ooo, recv, ends, reconn, reconnFail int64
	var clientsMissing int64
	acc := r.accepted
	for _, s := range r.subs {
		if s.neverRead || !s.connected {
			continue // never-read clients are not checked; failed connects are counted apart
		}
		var missing int64
		for seq := range acc {
			if atomic.LoadUint32(&acc[seq]) == 1 && !s.has(int64(seq)) {
				missing++
			}
		}
		if s.staller {
			lostStall += missing
		} else {
			lost += missing
		}
		if missing > 0 {
			clientsMissing++
		}
		dups += s.dups
		ooo += s.ooo
		recv += s.recv
		ends += atomic.LoadInt64(&s.ends)
		reconn += atomic.LoadInt64(&s.reconnects)
		reconnFail += atomic.LoadInt64(&s.reconnFail)
	}
	span := 0.0
	if ps, ld := r.pubStart.Load(), r.lastDelivery.Load(); ps > 0 && ld > ps {
		span = float64(ld-ps) / 1e9
	}
	dps := 0.0
	if span > 0 {
		dps = float64(recv) / span
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := func(tv syscall.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }
	return map[string]interface{}{
		"phase":                      "done",
		"published_attempted":        r.nextSeq.Load(),
		"published":                  r.acceptedN.Load(),
		"publish_errors":             r.publishErrors,
		"publish_seconds":            pubSecs,
		"drain_seconds":              r.drainSecs,
		"publish_rate":               float64(r.acceptedN.Load()) / maxf(pubSecs, 1e-9),
		"publish_ms":                 r.PublishLatency.Summary(),
		"deliveries":                 recv,
		"deliveries_per_s":           dps,
		"lost":                       lost,
		"lost_stallers":              lostStall,
		"clients_missing":            clientsMissing,
		"duplicates":                 dups,
		"out_of_order":               ooo,
		"latency_ms":                 r.Latency.Summary(),
		"stall_latency_ms":           r.StallLatency.Summary(),
		"stream_ends":                ends,
		"reset_events":               r.resets.Load(),
		"reconnects":                 reconn,
		"reconnect_failures":         reconnFail,
		"reconnect_failures_by_kind": r.reconnErrors,
		"last_reconnect_unix":        float64(r.lastReconnect.Load()) / 1e9,
		"health_ms":                  r.HealthLatency.Summary(),
		"health_errors":              r.healthErrors.Load(),
		"loadgen_cpu_s":              cpu(ru.Utime) + cpu(ru.Stime),
		"loadgen_wall_s":             time.Since(r.startWall).Seconds(),
	}
}

func maxf(a, b float64) float64 {
	if a > b {
		return a
	}
	return b
}
