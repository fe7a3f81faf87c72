//! One worker thread per device for the ordered multi-device loop, whose passes may fail.
//!
//! burn-train 0.21's `MultiDevicesTrainStep` sends each device's pass to a worker thread and then
//! waits for one output per pass sent. A pass that panics (a GPU out of memory while the model is
//! copied onto it or during its backward) ends its worker thread without an output, while the
//! other workers keep the channel open: the loop waits forever, and a run nobody watches hangs
//! instead of failing. [`Workers`] is that worker pool with one change: each pass runs under
//! `catch_unwind`, and a panic comes back as a [`PassFailure`] naming the device and the panic's
//! message, so the loop can stop the run with an error (as a single device's panic ends it).

use std::any::Any;
use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::{Builder, JoinHandle};

/// A pass that panicked.
#[derive(Clone, Debug, PartialEq)]
pub struct PassFailure {
    /// The worker's index (its device's place in the device list).
    pub worker: usize,
    /// The device, as `Debug` prints it.
    pub device: String,
    /// The panic's message.
    pub message: String,
}

impl std::fmt::Display for PassFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a training pass on device {} ({}) panicked: {}{}",
            self.worker,
            self.device,
            self.message,
            memory_hint(&self.message)
        )
    }
}

/// The advice added to a failure whose message speaks of memory (cubecl: "can't allocate
/// buffer of size", libtorch: "CUDA out of memory").
pub fn memory_hint(message: &str) -> &'static str {
    let m = message.to_lowercase();
    if m.contains("memory") || m.contains("allocate") {
        " (if the device ran out of memory: lower --micro-batch, or spread the batch over more \
         devices; `--dry-run` prints the estimated peak per device)"
    } else {
        ""
    }
}

/// The text of a panic's payload (`panic!` with a literal gives `&str`, with arguments `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

type Reply<O> = (usize, Result<O, PassFailure>);

/// One thread per device, each running `job(device, input)` for the inputs sent to it.
pub struct Workers<I, O> {
    inputs: Vec<Sender<I>>,
    outputs: Receiver<Reply<O>>,
    threads: Vec<JoinHandle<()>>,
}

impl<I: Send + 'static, O: Send + 'static> Workers<I, O> {
    /// Starts one worker per device.
    pub fn new<D, J>(devices: &[D], job: J) -> Self
    where
        D: Clone + Debug + Send + 'static,
        J: Fn(&D, I) -> O + Clone + Send + 'static,
    {
        let (reply, outputs) = channel::<Reply<O>>();
        let mut inputs = Vec::with_capacity(devices.len());
        let mut threads = Vec::with_capacity(devices.len());
        for (worker, device) in devices.iter().enumerate() {
            let (send, receive) = channel::<I>();
            let (device, job, reply) = (device.clone(), job.clone(), reply.clone());
            let thread = Builder::new()
                .name(format!("train-device-{worker}"))
                .spawn(move || {
                    // Ends when the pool is dropped (its senders with it).
                    while let Ok(input) = receive.recv() {
                        let out = catch_unwind(AssertUnwindSafe(|| job(&device, input))).map_err(
                            |payload| PassFailure {
                                worker,
                                device: format!("{device:?}"),
                                message: panic_message(payload.as_ref()),
                            },
                        );
                        if reply.send((worker, out)).is_err() {
                            break;
                        }
                    }
                })
                .expect("spawning a training worker thread");
            inputs.push(send);
            threads.push(thread);
        }
        Self {
            inputs,
            outputs,
            threads,
        }
    }

    /// Runs one round: `inputs[i]` (where `Some`) on worker `i`. Returns every output of the
    /// round in the order the workers finished, or, when a pass failed, the first failure, but
    /// only once every pass of the round has ended (no worker is left mid-pass).
    pub fn round(&self, inputs: Vec<Option<I>>) -> Result<Vec<O>, PassFailure> {
        assert!(
            inputs.len() <= self.inputs.len(),
            "{} inputs for {} workers",
            inputs.len(),
            self.inputs.len()
        );
        let mut sent = 0;
        for (worker, input) in inputs.into_iter().enumerate() {
            if let Some(input) = input {
                self.inputs[worker]
                    .send(input)
                    .expect("a training worker is running while its pool exists");
                sent += 1;
            }
        }
        let mut outputs = Vec::with_capacity(sent);
        let mut failure = None;
        for _ in 0..sent {
            // Every worker catches its panics and replies, so this receives one reply per pass.
            let (_, out) = self
                .outputs
                .recv()
                .expect("a training worker replies to every pass");
            match out {
                Ok(o) => outputs.push(o),
                Err(f) => {
                    failure.get_or_insert(f);
                }
            }
        }
        match failure {
            Some(f) => Err(f),
            None => Ok(outputs),
        }
    }
}

impl<I, O> Drop for Workers<I, O> {
    fn drop(&mut self) {
        self.inputs.clear();
        for thread in self.threads.drain(..) {
            // A worker catches its passes' panics; a panic outside them is already reported.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Runs `f` on its own thread and fails the test if it has not returned in 30 s (a hang).
    fn within_30s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (send, receive) = mpsc::channel();
        std::thread::spawn(move || send.send(f()).unwrap());
        receive
            .recv_timeout(Duration::from_secs(30))
            .expect("the round did not end within 30 s")
    }

    fn squares(devices: &[&'static str]) -> Workers<i32, i32> {
        Workers::new(devices, |_device: &&str, x: i32| {
            assert!(x >= 0, "negative input {x}");
            x * x
        })
    }

    #[test]
    fn every_worker_computes_its_input() {
        let mut out = within_30s(|| {
            let pool = squares(&["a", "b", "c"]);
            let first = pool.round(vec![Some(2), Some(3), Some(4)]).unwrap();
            let second = pool.round(vec![Some(5), None, Some(6)]).unwrap();
            (first, second)
        });
        out.0.sort();
        out.1.sort();
        assert_eq!(out, (vec![4, 9, 16], vec![25, 36]));
    }

    #[test]
    fn a_panicking_pass_is_a_failure_naming_its_device_not_a_hang() {
        let (failed, after) = within_30s(|| {
            let pool = squares(&["cpu:0", "cpu:1"]);
            let failed = pool.round(vec![Some(3), Some(-1)]);
            // The worker survives its pass's panic and takes the next round.
            let after = pool.round(vec![Some(1), Some(2)]).map(|mut v| {
                v.sort();
                v
            });
            (failed, after)
        });
        assert_eq!(
            failed,
            Err(PassFailure {
                worker: 1,
                device: "\"cpu:1\"".into(),
                message: "negative input -1".into(),
            })
        );
        assert_eq!(after, Ok(vec![1, 4]));
    }

    #[test]
    fn every_pass_of_a_failed_round_ends_before_it_returns() {
        // Worker 0 is slow; worker 1 fails at once. The round must still wait for worker 0.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let result = within_30s(move || {
            let pool = Workers::new(&["slow", "fails"], move |device: &&str, ()| {
                if *device == "fails" {
                    panic!("out of memory");
                }
                std::thread::sleep(Duration::from_millis(300));
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            pool.round(vec![Some(()), Some(())])
        });
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
        let failure = result.unwrap_err();
        assert_eq!(failure.worker, 1);
        assert!(failure.to_string().contains("lower --micro-batch"));
    }

    #[test]
    fn the_memory_hint_appears_only_for_memory_failures() {
        assert!(!memory_hint("can't allocate buffer of size: 3221225472").is_empty());
        assert!(!memory_hint("CUDA out of memory. Tried to allocate 2.00 GiB").is_empty());
        assert!(memory_hint("index out of bounds: the len is 3 but the index is 7").is_empty());
    }

    #[test]
    fn panic_messages_are_read_from_both_payload_kinds() {
        let literal = catch_unwind(|| panic!("plain")).unwrap_err();
        let formatted = catch_unwind(|| panic!("with {}", 2)).unwrap_err();
        let other = catch_unwind(|| std::panic::panic_any(7_u8)).unwrap_err();
        assert_eq!(panic_message(literal.as_ref()), "plain");
        assert_eq!(panic_message(formatted.as_ref()), "with 2");
        assert_eq!(panic_message(other.as_ref()), "(a panic without a message)");
    }
}
