//! The order in which data-parallel workers run their forward passes.
//!
//! Burn 0.21's backends keep one random generator per process (flex: a mutex-guarded `StdRng`;
//! cubecl: one host-side seed; libtorch: one global generator), shared by every device. With
//! several devices, burn-train's `MultiDevice` strategy runs one worker thread per device, and
//! their dropout masks and Gumbel noise would be drawn in whatever order the threads happen to
//! reach them. A [`Ticket`] makes each pass wait until the passes before it in the epoch's plan
//! have finished their forward (where all draws happen), so the draws come in the plan's order:
//! the same sequence as on one device, run after run. Backward passes (no draws) still overlap.

use std::sync::{Arc, Condvar, Mutex};

/// The next pass allowed to run its forward: `(epoch, pass index in the epoch's plan)`.
#[derive(Debug, Default)]
pub struct Turnstile {
    next: Mutex<(usize, usize)>,
    turn: Condvar,
}

impl Turnstile {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
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
    /// Blocks until every earlier pass of the epoch has finished its forward.
    pub fn wait(&self) -> Turn<'_> {
        let t = &self.turnstile;
        let mut next = t.next.lock().unwrap_or_else(|e| e.into_inner());
        while *next != (self.epoch, self.pass) {
            next = t.turn.wait(next).unwrap_or_else(|e| e.into_inner());
        }
        Turn { ticket: self }
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
}
