/**
 * Hostile programs against a real master, every step started cold (see
 * `_hostile_suite.ts`).
 */
import "./_hostile_suite.ts";
