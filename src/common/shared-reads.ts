// Many callers, one read: what the guard's domain scan needs when dozens of merges check at once (issue 13).

/**
 * Calls that overlap share one run of `read`, but only a run that started after the call: a caller never
 * gets an answer older than its own request (a check that decides on the result stays sound). While a
 * run is under way, every new caller waits for the next one, which starts when it ends: at most one run
 * at a time, and N callers at once cost two runs instead of N. A failed run fails the calls that shared it.
 */
export function sharedFreshReads<T>(read: () => Promise<T>): () => Promise<T> {
  let current: Promise<T> | null = null;
  let queued: Promise<T> | null = null;
  const start = (): Promise<T> => {
    const run = read();
    current = run;
    const ended = (): void => {
      if (current === run) current = null;
    };
    run.then(ended, ended);
    return run;
  };
  return () => {
    if (queued) return queued;
    if (!current) return start();
    queued = current
      .then(
        () => undefined,
        () => undefined,
      )
      .then(() => {
        queued = null;
        return start();
      });
    return queued;
  };
}
