#!/usr/bin/env node
// A worker that processes one message in deterministic steps, checkpointing
// each step in liminald, so that a redelivery after a crash resumes where
// the crashed run stopped instead of redoing the work.
//
//   node worker.js CONVERSATION MESSAGE_ID [STEPS]     (STEPS defaults to 3)
//
// It finds the daemon at $LIMINAL_SOCKET (else the default socket). Step i
// computes sha256("step i:" + input), where the input of step 0 is the
// message id and that of step i the output of step i-1 (read back from
// liminald on a resume). With CRASH_AFTER_STEP=N it kills itself with
// SIGKILL right after step N is recorded, to simulate a crash mid-message.
//
// It prints one JSON object per line of what it did:
//   {"decision":"start"} / {"decision":"resume","resumeFrom":2} / {"decision":"skip"}
//   {"step":2,"seq":5,"duplicate":false,"output":"<hex>"}
//   {"finished":true,"seq":6}

import { createHash } from 'node:crypto';
import { connect } from './liminald.js';

/** Step index of the work: deterministic, so a re-run records the same output. */
function runStep(index, input) {
  return createHash('sha256').update(`step ${index}:`).update(input).digest();
}

function report(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function processMessage(client, conversation, messageId, steps, crashAfter) {
  const delivery = await client.receive(conversation, messageId);
  report({ decision: delivery.decision, ...(delivery.decision === 'resume' && { resumeFrom: delivery.resumeFrom }) });
  if (delivery.decision === 'skip') return; // already fully processed

  const from = delivery.decision === 'resume' ? delivery.resumeFrom : 0;
  // Marks it in progress; a duplicate when a crashed run had started it.
  await client.start(conversation, messageId);

  // The input of the first step to run: the message, or the checkpointed
  // output of the step before it.
  let input = Buffer.from(messageId, 'utf8');
  if (from > 0) {
    const { steps: done } = await client.state(conversation, messageId);
    const previous = done.find((s) => s.stepIndex === from - 1);
    if (previous === undefined) throw new Error(`step ${from - 1} has no recorded output`);
    input = previous.output;
  }

  for (let i = from; i < steps; i++) {
    let output;
    try {
      output = runStep(i, input);
    } catch (err) {
      // The work failed: record it, so that a redelivery retries it.
      await client.fail(conversation, messageId, `step ${i}: ${err.message}`);
      throw err;
    }
    const { seq, duplicate } = await client.step(conversation, messageId, i, output);
    report({ step: i, seq, duplicate, output: output.toString('hex') });
    if (i === crashAfter) process.kill(process.pid, 'SIGKILL'); // the simulated crash
    input = output;
  }

  const { seq } = await client.finish(conversation, messageId);
  report({ finished: true, seq });
}

async function main() {
  const [conversation, messageId, stepsArg = '3'] = process.argv.slice(2);
  const steps = Number(stepsArg);
  if (!conversation || !messageId || !Number.isInteger(steps) || steps < 1) {
    process.stderr.write('usage: node worker.js CONVERSATION MESSAGE_ID [STEPS]\n');
    process.exitCode = 2;
    return;
  }
  const crash = process.env.CRASH_AFTER_STEP;
  const crashAfter = crash === undefined || crash === '' ? -1 : Number(crash);

  const client = await connect();
  try {
    await processMessage(client, conversation, messageId, steps, crashAfter);
  } finally {
    await client.close();
  }
}

main().catch((err) => {
  process.stderr.write(`worker: ${err.name}${err.code ? ` (${err.code})` : ''}: ${err.message}\n`);
  process.exitCode = 1;
});
