//! Bookkeeping of `cp.async`: each thread's copies in flight and its cp.async-groups.
//!
//! **Model.** A `cp.async` reads its global source when it is issued and holds the bytes;
//! they land in shared memory only when a `cp.async.wait_group` / `cp.async.wait_all` of the
//! issuing thread covers the copy's group. From issue to landing the destination words are
//! marked in flight (see `SharedMem`): any read or write of them, by any thread, is reported
//! as a race naming the `cp.async`'s line. On landing the words count as written by the
//! issuing thread in the current barrier interval, so the usual checker applies: the issuing
//! thread may read them at once, other threads only after a barrier (the ISA makes the
//! writes visible to the executing thread at its wait; a barrier after it publishes them).
//! Copies never waited for stay in flight until the CTA ends (nobody may read them).
//! A source changed between issue and wait would be read early: the kernels do not do that.

/// One copy in flight: its destination words (4-byte aligned shared address).
#[derive(Clone, Copy, Debug)]
pub struct PendingCopy {
    pub dst: u64,
    pub words: [u32; 4],
    pub nwords: u8,
    /// the cp.async-group it belongs to (the issuing thread's commit count at issue)
    pub group: u32,
    /// source line of the `cp.async`, for messages
    pub line: u32,
}

impl PendingCopy {
    pub fn covers(&self, addr: u64) -> bool {
        (self.dst..self.dst + 4 * self.nwords as u64).contains(&addr)
    }
}

#[derive(Default)]
struct ThreadCopies {
    /// cp.async-groups committed so far
    committed: u32,
    pending: Vec<PendingCopy>,
}

/// The copies in flight of every thread of a CTA.
pub struct AsyncCopies {
    threads: Vec<ThreadCopies>,
}

impl AsyncCopies {
    pub fn new(nthreads: usize) -> Self {
        AsyncCopies {
            threads: (0..nthreads).map(|_| ThreadCopies::default()).collect(),
        }
    }

    /// Record a copy of thread `t`; it joins the thread's next (uncommitted) group.
    pub fn issue(&mut self, t: u32, mut copy: PendingCopy) {
        let th = &mut self.threads[t as usize];
        copy.group = th.committed;
        th.pending.push(copy);
    }

    /// `cp.async.commit_group`: the uncommitted copies form a group.
    pub fn commit(&mut self, t: u32) {
        self.threads[t as usize].committed += 1;
    }

    /// Remove and hand to `land` the copies `cp.async.wait_group n` of thread `t` completes:
    /// those of every committed group but the `n` most recent.
    pub fn complete(&mut self, t: u32, n: u32, mut land: impl FnMut(&PendingCopy)) {
        let th = &mut self.threads[t as usize];
        let done_below = th.committed.saturating_sub(n);
        th.pending.retain(|c| {
            let done = c.group < done_below;
            if done {
                land(c);
            }
            !done
        });
    }

    /// The copy in flight of thread `t` that writes `addr`.
    pub fn find(&self, t: u32, addr: u64) -> Option<&PendingCopy> {
        self.threads
            .get(t as usize)?
            .pending
            .iter()
            .find(|c| c.covers(addr))
    }

    /// Forget every copy and group (a new CTA starts); `unmark` sees each copy dropped.
    pub fn reset(&mut self, mut unmark: impl FnMut(&PendingCopy)) {
        for th in &mut self.threads {
            th.pending.iter().for_each(&mut unmark);
            th.pending.clear();
            th.committed = 0;
        }
    }
}
