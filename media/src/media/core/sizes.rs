//! The sizes of the core's long-lived maps and tables, for the `kaskade_sfu_map_entries`
//! gauges: everything that grows with participants, rooms or links must shrink back when they
//! go, and a soak run watches these numbers to prove it. Counting walks the rooms and links
//! (a few hundred entries at most), once a second from the node's driver, never per packet.

use super::MediaCore;

impl MediaCore {
    /// `(map name, entries)` of every long-lived map of the core.
    pub fn map_sizes(&mut self) -> Vec<(&'static str, usize)> {
        // superseded deadlines at the top of the heap are dropped first, as the driver's next
        // `poll_timeout` would, so an idle core reads empty
        let _ = self.deadlines.earliest();
        let (tuples, tuple_lists) = self.demux.sizes();
        let (heap, deadlines) = self.deadlines.sizes();
        let rooms = || self.rooms.values();
        let sum = |f: &dyn Fn(&crate::media::room::Room) -> usize| rooms().map(f).sum::<usize>();
        let (mut link_streams, mut link_ring, mut link_missing) = (0, 0, 0);
        for (link, _) in self.links.values() {
            let (streams, ring, missing) = link.sizes();
            link_streams += streams;
            link_ring += ring;
            link_missing += missing;
        }
        vec![
            ("participants", self.participants.len()),
            (
                "relayed_participants",
                self.participants.values().filter(|p| !p.is_here()).count(),
            ),
            (
                "participant_slots",
                self.participants.values().map(|p| p.slots.len()).sum(),
            ),
            (
                "repair_packets",
                self.participants.values().map(|p| p.repair.len()).sum(),
            ),
            ("rooms", self.rooms.len()),
            ("room_names", self.room_names.len()),
            ("room_members", sum(&|r| r.members.len())),
            ("room_routes", sum(&|r| r.table_sizes().0)),
            ("room_relays", sum(&|r| r.table_sizes().1)),
            ("room_speakers", sum(&|r| r.speaker.tracked())),
            (
                "room_subscriptions",
                sum(&|r| r.subscriptions.len() + r.wanted.len()),
            ),
            ("demux_tuples", tuples),
            ("demux_participants", tuple_lists),
            ("deadline_heap", heap),
            ("deadlines", deadlines),
            ("links", self.links.len()),
            ("link_streams", link_streams),
            ("link_retransmit_ring", link_ring),
            ("link_awaited", link_missing),
            ("queued_transmits", self.transmits.len()),
            ("queued_outputs", self.outputs.len()),
        ]
    }
}
