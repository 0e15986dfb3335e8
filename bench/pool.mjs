// What the benches' Node.js clients share: running many pieces of work a few at a time.

// Runs `work(i)` for i in [0, count) with at most `width` at once; the errors are counted.
export async function pool(count, width, work) {
  let next = 0, failed = 0;
  const firstErrors = [];
  await Promise.all(Array.from({ length: Math.min(width, count) }, async () => {
    while (next < count) {
      const i = next++;
      try {
        await work(i);
      } catch (e) {
        failed++;
        if (firstErrors.length < 3) firstErrors.push(String(e.message || e));
      }
    }
  }));
  return { failed, firstErrors };
}
