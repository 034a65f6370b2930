-- People who may not be handed out from a queue entry or in direct mode (user_id, and the id of
-- what holds them): someone holds them (an active assignment), or a callback is open for them,
-- which is then their only way back (SPEC 7.2). The one definition of "busy" for the swap
-- (app/queues/population.py), the hand-out and direct mode. (cq_candidates spells out its two
-- halves instead: the population's walk must stream along an index, which an anti-join over a
-- UNION ALL does not, and it classifies held leads rather than leaving them out.)
CREATE VIEW cq_busy AS
    SELECT a.user_id, a.id
      FROM assignments a
     WHERE a.status = 'active'
    UNION ALL
    SELECT c.user_id, c.id
      FROM callbacks c
     WHERE c.status IN ('scheduled', 'assigned')
