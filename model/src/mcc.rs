//! Mobile Country Codes (MCC, ITU-T E.212) and the country each one stands for.
//!
//! This module owns the mapping from the three-digit MCC at the head of an IMSI or a
//! PLMN id to an ISO 3166-1 alpha-2 code of [`crate::country`], which is how kairos
//! tells which country a subscriber is roaming in.
//!
//! Source: the ITU-T E.212 list of Mobile Country Codes (annex to the ITU Operational
//! Bulletin). Only geographic MCCs (2xx–7xx) are here: the 9xx codes (901
//! international, 902 and up for networks such as maritime, aeronautical and satellite
//! systems) name no country, so [`mcc_country`] answers `None` for them, as it does
//! for unassigned codes and for codes used without an ITU assignment (289, used in
//! Abkhazia).
//!
//! Some MCCs are shared by several ISO territories. Each maps to the main one:
//!
//! - 234 and 235 United Kingdom: also Guernsey, Jersey and the Isle of Man;
//! - 310–316 United States: also operators in Guam and the Northern Mariana Islands;
//! - 340 French Antilles: Guadeloupe (GP), also Martinique, Saint Barthélemy and
//!   Saint Martin;
//! - 362 former Netherlands Antilles: Curaçao (CW), also Sint Maarten and the
//!   Caribbean Netherlands (Bonaire, Sint Eustatius, Saba);
//! - 425 Israel: also the Palestinian operators;
//! - 505 Australia: also Christmas Island, the Cocos (Keeling) Islands and Norfolk
//!   Island;
//! - 647 French departments of the Indian Ocean: Réunion (RE), also Mayotte;
//! - 242 Norway: also Svalbard; 244 Finland: also Åland.
//!
//! Countries with several MCCs (India 404–406, Japan 440–441, China 460–461, the UAE
//! 424/430/431, the US and UK above) have one entry per MCC.

/// Every geographic MCC with its ISO 3166-1 alpha-2 country, sorted by MCC
/// (binary-searched by [`mcc_country`]).
pub static MCC_COUNTRIES: &[(u16, &str)] = &[
    // Europe (2xx)
    (202, "GR"),
    (204, "NL"),
    (206, "BE"),
    (208, "FR"),
    (212, "MC"),
    (213, "AD"),
    (214, "ES"),
    (216, "HU"),
    (218, "BA"),
    (219, "HR"),
    (220, "RS"),
    (221, "XK"),
    (222, "IT"),
    (225, "VA"),
    (226, "RO"),
    (228, "CH"),
    (230, "CZ"),
    (231, "SK"),
    (232, "AT"),
    (234, "GB"), // also Guernsey, Jersey, Isle of Man
    (235, "GB"),
    (238, "DK"),
    (240, "SE"),
    (242, "NO"), // also Svalbard
    (244, "FI"), // also Åland
    (246, "LT"),
    (247, "LV"),
    (248, "EE"),
    (250, "RU"),
    (255, "UA"),
    (257, "BY"),
    (259, "MD"),
    (260, "PL"),
    (262, "DE"),
    (266, "GI"),
    (268, "PT"),
    (270, "LU"),
    (272, "IE"),
    (274, "IS"),
    (276, "AL"),
    (278, "MT"),
    (280, "CY"),
    (282, "GE"),
    (283, "AM"),
    (284, "BG"),
    (286, "TR"),
    (288, "FO"),
    (290, "GL"),
    (292, "SM"),
    (293, "SI"),
    (294, "MK"),
    (295, "LI"),
    (297, "ME"),
    // North America and the Caribbean (3xx)
    (302, "CA"),
    (308, "PM"),
    (310, "US"),
    (311, "US"),
    (312, "US"),
    (313, "US"),
    (314, "US"),
    (315, "US"),
    (316, "US"),
    (330, "PR"),
    (332, "VI"),
    (334, "MX"),
    (338, "JM"),
    (340, "GP"), // French Antilles: also Martinique, Saint Barthélemy, Saint Martin
    (342, "BB"),
    (344, "AG"),
    (346, "KY"),
    (348, "VG"),
    (350, "BM"),
    (352, "GD"),
    (354, "MS"),
    (356, "KN"),
    (358, "LC"),
    (360, "VC"),
    (362, "CW"), // former Netherlands Antilles: also Sint Maarten, Bonaire
    (363, "AW"),
    (364, "BS"),
    (365, "AI"),
    (366, "DM"),
    (368, "CU"),
    (370, "DO"),
    (372, "HT"),
    (374, "TT"),
    (376, "TC"),
    // Asia and the Middle East (4xx)
    (400, "AZ"),
    (401, "KZ"),
    (402, "BT"),
    (404, "IN"),
    (405, "IN"),
    (406, "IN"),
    (410, "PK"),
    (412, "AF"),
    (413, "LK"),
    (414, "MM"),
    (415, "LB"),
    (416, "JO"),
    (417, "SY"),
    (418, "IQ"),
    (419, "KW"),
    (420, "SA"),
    (421, "YE"),
    (422, "OM"),
    (424, "AE"),
    (425, "IL"), // also the Palestinian operators
    (426, "BH"),
    (427, "QA"),
    (428, "MN"),
    (429, "NP"),
    (430, "AE"), // Abu Dhabi
    (431, "AE"), // Dubai
    (432, "IR"),
    (434, "UZ"),
    (436, "TJ"),
    (437, "KG"),
    (438, "TM"),
    (440, "JP"),
    (441, "JP"),
    (450, "KR"),
    (452, "VN"),
    (454, "HK"),
    (455, "MO"),
    (456, "KH"),
    (457, "LA"),
    (460, "CN"),
    (461, "CN"),
    (466, "TW"),
    (467, "KP"),
    (470, "BD"),
    (472, "MV"),
    // South-East Asia and Oceania (5xx)
    (502, "MY"),
    (505, "AU"), // also Christmas Island, Cocos (Keeling) Islands, Norfolk Island
    (510, "ID"),
    (514, "TL"),
    (515, "PH"),
    (520, "TH"),
    (525, "SG"),
    (528, "BN"),
    (530, "NZ"),
    (534, "MP"),
    (535, "GU"),
    (536, "NR"),
    (537, "PG"),
    (539, "TO"),
    (540, "SB"),
    (541, "VU"),
    (542, "FJ"),
    (543, "WF"),
    (544, "AS"),
    (545, "KI"),
    (546, "NC"),
    (547, "PF"),
    (548, "CK"),
    (549, "WS"),
    (550, "FM"),
    (551, "MH"),
    (552, "PW"),
    (553, "TV"),
    (554, "TK"),
    (555, "NU"),
    // Africa (6xx)
    (602, "EG"),
    (603, "DZ"),
    (604, "MA"),
    (605, "TN"),
    (606, "LY"),
    (607, "GM"),
    (608, "SN"),
    (609, "MR"),
    (610, "ML"),
    (611, "GN"),
    (612, "CI"),
    (613, "BF"),
    (614, "NE"),
    (615, "TG"),
    (616, "BJ"),
    (617, "MU"),
    (618, "LR"),
    (619, "SL"),
    (620, "GH"),
    (621, "NG"),
    (622, "TD"),
    (623, "CF"),
    (624, "CM"),
    (625, "CV"),
    (626, "ST"),
    (627, "GQ"),
    (628, "GA"),
    (629, "CG"),
    (630, "CD"),
    (631, "AO"),
    (632, "GW"),
    (633, "SC"),
    (634, "SD"),
    (635, "RW"),
    (636, "ET"),
    (637, "SO"),
    (638, "DJ"),
    (639, "KE"),
    (640, "TZ"),
    (641, "UG"),
    (642, "BI"),
    (643, "MZ"),
    (645, "ZM"),
    (646, "MG"),
    (647, "RE"), // French Indian Ocean departments: also Mayotte
    (648, "ZW"),
    (649, "NA"),
    (650, "MW"),
    (651, "LS"),
    (652, "BW"),
    (653, "SZ"),
    (654, "KM"),
    (655, "ZA"),
    (657, "ER"),
    (658, "SH"),
    (659, "SS"),
    // Central and South America (7xx)
    (702, "BZ"),
    (704, "GT"),
    (706, "SV"),
    (708, "HN"),
    (710, "NI"),
    (712, "CR"),
    (714, "PA"),
    (716, "PE"),
    (722, "AR"),
    (724, "BR"),
    (730, "CL"),
    (732, "CO"),
    (734, "VE"),
    (736, "BO"),
    (738, "GY"),
    (740, "EC"),
    (742, "GF"),
    (744, "PY"),
    (746, "SR"),
    (748, "UY"),
    (750, "FK"),
];

/// The ISO 3166-1 alpha-2 country of a geographic MCC; `None` for 9xx codes and for
/// codes the E.212 list does not assign.
///
/// ```
/// use kairos_model::mcc::mcc_country;
/// assert_eq!(mcc_country(268), Some("PT"));
/// assert_eq!(mcc_country(901), None);
/// ```
pub fn mcc_country(mcc: u16) -> Option<&'static str> {
    MCC_COUNTRIES
        .binary_search_by_key(&mcc, |&(code, _)| code)
        .ok()
        .map(|index| MCC_COUNTRIES[index].1)
}

/// Parses an MCC written as exactly three ASCII digits (`"268"`); no sign, no
/// whitespace, no other length.
///
/// ```
/// use kairos_model::mcc::parse_mcc;
/// assert_eq!(parse_mcc("268"), Some(268));
/// assert_eq!(parse_mcc("26"), None);
/// ```
pub fn parse_mcc(s: &str) -> Option<u16> {
    if s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::country::is_country_code;

    #[test]
    fn table_is_strictly_sorted_without_duplicates() {
        for pair in MCC_COUNTRIES.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} must sort before {}", pair[0].0, pair[1].0);
        }
    }

    #[test]
    fn every_mcc_is_geographic() {
        for &(mcc, _) in MCC_COUNTRIES {
            assert!((200..800).contains(&mcc), "{mcc}");
        }
    }

    #[test]
    fn every_country_is_known() {
        for &(mcc, code) in MCC_COUNTRIES {
            assert!(is_country_code(code), "{mcc} -> {code}");
        }
    }

    #[test]
    fn spot_checks() {
        for (mcc, code) in [
            (268, "PT"),
            (310, "US"),
            (311, "US"),
            (316, "US"),
            (234, "GB"),
            (235, "GB"),
            (262, "DE"),
            (440, "JP"),
            (724, "BR"),
            (460, "CN"),
            (404, "IN"),
            (405, "IN"),
            (655, "ZA"),
            (221, "XK"),
            (340, "GP"),
            (362, "CW"),
            (647, "RE"),
            (202, "GR"),
            (750, "FK"),
        ] {
            assert_eq!(mcc_country(mcc), Some(code), "{mcc}");
        }
    }

    #[test]
    fn non_geographic_and_unassigned_mccs_have_no_country() {
        for mcc in [0, 1, 199, 201, 289, 300, 901, 999, 1000, u16::MAX] {
            assert_eq!(mcc_country(mcc), None, "{mcc}");
        }
    }

    #[test]
    fn parse_mcc_takes_exactly_three_digits() {
        assert_eq!(parse_mcc("268"), Some(268));
        assert_eq!(parse_mcc("001"), Some(1));
        assert_eq!(parse_mcc("999"), Some(999));
        for text in ["", "26", "2680", "abc", "+26", "-26", " 26", "26 ", "2a8", "２６８"] {
            assert_eq!(parse_mcc(text), None, "{text:?}");
        }
    }
}
