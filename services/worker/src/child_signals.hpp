#pragma once
// The signal state a job's program starts with. Called in a new child after
// it left the worker's process group and before it executes anything.
#include <signal.h>

namespace conveyor::worker {

// Every disposition the default and an empty mask, whatever the worker's
// threads ignore or block. A signal sent to the worker's process group while
// the child was still in it (the SIGTERM that stops the worker, a terminal's
// ^C) is pending in the child, blocked, but it was the worker's: setting
// SIG_IGN discards it, before the mask is emptied. Async-signal-safe and
// allocation-free (it runs between clone(CLONE_VM) and execve).
inline void reset_signals_of_child() {
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {  // EINVAL for some (SIGKILL, glibc's own): fine
    ::sigaction(sig, &ignore, nullptr);
    ::sigaction(sig, &dfl, nullptr);
  }
  sigset_t empty;
  sigemptyset(&empty);
  ::sigprocmask(SIG_SETMASK, &empty, nullptr);
}

}  // namespace conveyor::worker
