//! The order in which data-parallel workers run their forward passes.
//!
//! Burn 0.21's backends keep one random generator per process (flex: a mutex-guarded `StdRng`;
//! cubecl: one host-side seed; libtorch: one global generator), shared by every device. With
//! several devices, burn-train's `MultiDevice` strategy runs one worker thread per device, and
//! their dropout masks and Gumbel noise would be drawn in whatever order the threads happen to
//! reach them. A [`Ticket`] makes each pass wait until the passes before it in the epoch's plan
//! have finished their forward (where all draws happen), so the draws come in the plan's order:
//! the same sequence as on one device, run after run. Backward passes (no draws) still overlap.

use std::sync::{Arc, Barrier, Condvar, Mutex};

use burn::train::Interrupter;

/// The next pass allowed to run its forward: `(epoch, pass index in the epoch's plan)`.
#[derive(Debug, Default)]
pub struct Turnstile {
    next: Mutex<(usize, usize)>,
    turn: Condvar,
    /// Burn's DDP: where the workers agree on stopping (see [`Rounds`]).
    rounds: Option<Arc<Rounds>>,
}

impl Turnstile {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A turnstile whose passes first meet at `rounds`' barrier.
    pub fn with_rounds(rounds: Arc<Rounds>) -> Arc<Self> {
        Arc::new(Self {
            rounds: Some(rounds),
            ..Self::default()
        })
    }

    /// Starts epoch `epoch` at its first pass (every worker's loader calls this when its epoch
    /// starts; only the first call of an epoch changes anything).
    pub fn open_epoch(&self, epoch: usize) {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        if next.0 != epoch {
            *next = (epoch, 0);
            self.turn.notify_all();
        }
    }
}

/// The place of one pass in its epoch's plan.
#[derive(Clone, Debug)]
pub struct Ticket {
    pub turnstile: Arc<Turnstile>,
    pub epoch: usize,
    pub pass: usize,
}

/// Held while a pass runs its forward; dropping it (also when the forward panics) lets the
/// next pass in.
pub struct Turn<'a> {
    ticket: &'a Ticket,
}

impl Ticket {
    /// Blocks until every earlier pass of the epoch has finished its forward (under Burn's DDP,
    /// after the workers' round barrier, [`Rounds::meet`]).
    pub fn wait(&self) -> Turn<'_> {
        if let Some(rounds) = &self.turnstile.rounds {
            rounds.meet();
        }
        let t = &self.turnstile;
        let mut next = t.next.lock().unwrap_or_else(|e| e.into_inner());
        while *next != (self.epoch, self.pass) {
            next = t.turn.wait(next).unwrap_or_else(|e| e.into_inner());
        }
        Turn { ticket: self }
    }
}

impl Ticket {
    /// Moves the turnstile past this pass when it ends without having had its turn (its worker
    /// panicked before the forward, e.g. while the model was copied to its device), so the passes
    /// after it are not left waiting: waits for the passes before it, then lets the next one in.
    /// Does nothing for a pass that had its turn.
    pub fn pass_over(&self) {
        let t = &self.turnstile;
        let mut next = t.next.lock().unwrap_or_else(|e| e.into_inner());
        while *next < (self.epoch, self.pass) {
            next = t.turn.wait(next).unwrap_or_else(|e| e.into_inner());
        }
        if *next == (self.epoch, self.pass) {
            *next = (self.epoch, self.pass + 1);
            t.turn.notify_all();
        }
    }
}

/// Calls [`Ticket::pass_over`] when dropped: held by a worker for the whole of a pass.
pub struct PassOver(pub Option<Ticket>);

impl Drop for PassOver {
    fn drop(&mut self) {
        if let Some(ticket) = &self.0 {
            ticket.pass_over();
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let t = &self.ticket.turnstile;
        let mut next = t.next.lock().unwrap_or_else(|e| e.into_inner());
        *next = (self.ticket.epoch, self.ticket.pass + 1);
        t.turn.notify_all();
    }
}

/// Where Burn's DDP workers agree on stopping.
///
/// burn-train 0.21's DDP workers each check the learner's stop flag on their own, after every
/// pass. A stop raised while they run (a diverged loss, a failed metrics write) can end one
/// worker's loop a pass before another's, whose next pass then waits forever: for its turn
/// here, or for the stopped worker's share of the all-reduce. So under DDP those stops are
/// *requested* (`requests`, the interrupter the divergence watch and the metric files get), and
/// become the learner's stop only here: every worker meets at a barrier before each pass's
/// forward (the workers run the same number of passes per epoch), one of them turns a pending
/// request into the learner's stop, and a second barrier holds them until that is done. Every
/// worker then finishes that same pass, with its all-reduce, and ends after it. A request made
/// after the last pass (during the last validation) is never turned into a stop; the caller
/// checks `requests` after training too.
pub struct Rounds {
    barrier: Barrier,
    requests: Interrupter,
    stop: Mutex<Option<Interrupter>>,
}

impl std::fmt::Debug for Rounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rounds")
            .field("stop_requested", &self.requests.should_stop())
            .finish_non_exhaustive()
    }
}

impl Rounds {
    /// Rounds of `workers` workers; stops requested on `requests`.
    pub fn new(workers: usize, requests: Interrupter) -> Arc<Self> {
        Arc::new(Self {
            barrier: Barrier::new(workers),
            requests,
            stop: Mutex::new(None),
        })
    }

    /// The learner's stop flag (known once the learner exists, after the loaders).
    pub fn bind(&self, stop: Interrupter) {
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop);
    }

    /// Every worker calls this once per pass, before its forward.
    pub fn meet(&self) {
        if self.barrier.wait().is_leader() && self.requests.should_stop() {
            let stop = self.stop.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(stop) = stop.as_ref() {
                stop.stop(self.requests.get_message().as_deref());
            }
        }
        self.barrier.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Threads started in reverse order still pass in ticket order.
    #[test]
    fn passes_go_in_ticket_order_whatever_the_thread_timing() {
        let turnstile = Turnstile::new();
        turnstile.open_epoch(3);
        let order = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..6)
            .rev()
            .map(|pass| {
                let ticket = Ticket {
                    turnstile: turnstile.clone(),
                    epoch: 3,
                    pass,
                };
                let order = order.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(5 * (6 - pass as u64)));
                    let _turn = ticket.wait();
                    order.lock().unwrap().push(pass);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4, 5]);
    }

    /// A pass whose forward panics still lets the next one in.
    #[test]
    fn a_panicking_pass_releases_its_turn() {
        let turnstile = Turnstile::new();
        turnstile.open_epoch(1);
        let first = Ticket {
            turnstile: turnstile.clone(),
            epoch: 1,
            pass: 0,
        };
        let second = Ticket {
            turnstile: turnstile.clone(),
            epoch: 1,
            pass: 1,
        };
        let failed = std::thread::spawn(move || {
            let _turn = first.wait();
            panic!("forward failed");
        })
        .join();
        assert!(failed.is_err());
        let _turn = second.wait(); // returns: the panicking pass advanced the turnstile
        turnstile.open_epoch(2);
        assert_eq!(*turnstile.next.lock().unwrap(), (2, 0));
    }

    /// A pass that fails before its turn (its worker panicked while copying the model) is
    /// passed over once the passes before it are done; one that had its turn changes nothing.
    #[test]
    fn a_pass_failing_before_its_turn_is_passed_over_in_order() {
        let (done, finished) = std::sync::mpsc::channel();
        // On its own thread, so that a broken pass-over fails the test instead of hanging it.
        std::thread::spawn(move || {
            let turnstile = Turnstile::new();
            turnstile.open_epoch(1);
            let ticket = |pass| Ticket {
                turnstile: turnstile.clone(),
                epoch: 1,
                pass,
            };
            let (first, second, third) = (ticket(0), ticket(1), ticket(2));
            let (started, running) = std::sync::mpsc::channel();
            // Pass 1 fails at once, before pass 0 has had its turn: it waits for pass 0.
            let failing = std::thread::spawn(move || {
                let _over = PassOver(Some(second));
                started.send(()).unwrap();
                panic!("out of memory while copying the model");
            });
            running.recv().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !failing.is_finished(),
                "pass 1 moved on before pass 0's turn"
            );
            drop(first.wait());
            assert!(failing.join().is_err());
            drop(third.wait()); // returns: pass 1 was passed over
            // Pass 0 had its turn: passing it over again leaves the turnstile where it is.
            first.pass_over();
            done.send(*turnstile.next.lock().unwrap()).unwrap();
        });
        let next = finished
            .recv_timeout(Duration::from_secs(30))
            .expect("the passes after a failed one were left waiting");
        assert_eq!(next, (1, 3));
    }

    /// Two workers running passes like burn-train's DDP loop (check the learner's stop flag
    /// after each pass): a stop requested by either at any moment, even in the middle of a pass
    /// or between the other's check and its next pass, ends both after the same pass.
    #[test]
    fn ddp_workers_stop_after_the_same_pass() {
        for (requester, at) in [(0, 0), (1, 0), (0, 3), (1, 5), (0, 7)] {
            let requests = Interrupter::new();
            let stop = Interrupter::new();
            let rounds = Rounds::new(2, requests.clone());
            rounds.bind(stop.clone());
            let workers: Vec<_> = (0..2)
                .map(|w| {
                    let (rounds, stop, requests) = (rounds.clone(), stop.clone(), requests.clone());
                    std::thread::spawn(move || {
                        let mut done = 0;
                        for pass in 0..100 {
                            rounds.meet();
                            // Worker `w` is slower by a different amount each pass.
                            std::thread::sleep(Duration::from_micros(
                                ((pass * 7 + w * 13) % 5) as u64 * 200,
                            ));
                            if w == requester && pass == at {
                                requests.stop(Some("diverged"));
                            }
                            done += 1;
                            if stop.should_stop() {
                                break;
                            }
                        }
                        done
                    })
                })
                .collect();
            let done: Vec<usize> = workers.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(
                done[0], done[1],
                "request by {requester} at pass {at}: {done:?}"
            );
            assert!(done[0] > at && done[0] <= at + 2, "{done:?}");
            assert_eq!(stop.get_message().as_deref(), Some("diverged"));
        }
    }
}
