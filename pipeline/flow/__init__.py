"""Flow control: how many requests may be in flight, and how fast they may start.

Every request takes a :class:`~pipeline.flow.tickets.Ticket` from the limiters
(:mod:`pipeline.flow.limiter`: flow control, then the ``--rate-scope`` budget) and hands it
back with its :class:`~pipeline.flow.tickets.Result`. In flow control
(:mod:`pipeline.flow.compose`) three limits compose, the first two found by the same
algorithm (:class:`~pipeline.flow.aimd.Seeker`):

- the **concurrency limit** (ceiling ``--concurrency``), slow start from ``initial``;
- the **rate cap** (:mod:`pipeline.flow.ratecap`), none until the API refuses on rate (ceiling
  ``--rate``);
- the user's fixed ``--rate`` (aiolimiter), a hard ceiling that nothing replaces.

The API's answers are two different signals, and each moves only its own limit. Which one a
429 is, the levels it comes at tell (:mod:`pipeline.flow.levels`), not the Retry-After header
(a gateway may send one with a refusal for too many in flight):

- refused above any in-flight level that succeeded lately, where most requests lately were
  refused: a **concurrency** refusal (Twilio's 20429, "too many concurrent requests"). The
  limit drops to that in-flight level less one, at once;
- refused among successes at its level: a **rate** refusal, and the rate cap moves (see
  :mod:`pipeline.flow.ratecap`). A rate refusal at a level an in-flight limit found earlier should
  admit shows that reading was wrong: it is dropped;
- above an in-flight limit found before, without a Retry-After: that limit again once
  ``PROBE_SHARE`` of the requests there lately were refused (see :mod:`pipeline.flow.levels`);
- one refusal above what worked, with no pattern yet, moves nothing: the record waits;
- before anything came back, nothing can tell an in-flight limit of N from a bucket of N
  tokens: without a Retry-After it is read as concurrency, but slow start goes on from the
  lower level (a rate limit's first burst must not pin the run); with one, as rate;
- a 503, a timeout, a reset or a stall (:mod:`pipeline.flow.overdue`) is load only when errors
  rise with the level of requests in flight (:mod:`pipeline.flow.overload`); a steady share at
  every level is noise: counted ("not a limit"), nothing more.

A limit the API showed (an in-flight 429 confirmed, errors that rose with the level) is
:attr:`~pipeline.flow.compose.FlowControl.shown`, the only source of the summary's advice for
next time.

A Retry-After is obeyed by the request that got it (``pipeline.delivery.delivery``); everyone
holds back only when refusals are all there is (:mod:`pipeline.flow.hold`), and every worker
of a ``--rate-scope`` when one of them got it (:mod:`pipeline.flow.shared`).
"""
