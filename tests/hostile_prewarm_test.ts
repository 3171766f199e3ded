/**
 * Hostile programs against a real master whose jobs take pre-warmed
 * sandboxes (`--prewarm 2`): every verdict, limit and cleanup of the cold
 * suite must hold as well (see `_hostile_suite.ts`).
 */
import "./_hostile_suite.ts?prewarm=2";
