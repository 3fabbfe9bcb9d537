import { useFreshConnections } from './fetch.ts';
import { run } from './program.ts';

/** `hush`: run through tsx (`npm run hush -- …`, `node --import tsx packages/cli/src/main.ts …`, or bin/hush.js). */

// `hush history bob | head` closes the pipe early: that is not an error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

useFreshConnections();
const code = await run(process.argv);
// A command is done when run() returns: sockets or timers left behind must not keep the process up.
process.exit(code);
