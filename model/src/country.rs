//! The ISO 3166-1 alpha-2 country table: every code kairos accepts as a country.
//!
//! This module owns the list of countries: their two-letter codes, the English short
//! name used when a country is named in a message, and one representative IANA time
//! zone. It is the single source of truth for "is this a country code" across the
//! engine ([`crate::CountryCode`] and [`crate::mcc`] both check against it).
//!
//! Source: ISO 3166-1 as of 2024, all 249 officially assigned alpha-2 codes, plus the
//! user-assigned `XK` (Kosovo), which mobile operators and the ITU's MCC list use.
//!
//! - `name` is the common English short name, fit to appear mid-sentence in a
//!   marketing SMS: no leading "the", no formal styles ("Russia", not "Russian
//!   Federation"; "Bolivia", not "Bolivia, Plurinational State of"). Every name is
//!   written in the GSM 03.38 default alphabet, so naming a country never forces an
//!   SMS into UCS-2 ("Ivory Coast", "Curacao", "Sao Tome and Principe").
//! - `timezone` is the IANA zone of the capital (or the country's main zone where the
//!   capital has no zone of its own, e.g. `America/Toronto` for Ottawa). Bouvet Island
//!   and Heard Island, uninhabited and without a zone in `zone.tab`, take the zone of
//!   the administering state's capital; Kosovo takes `Europe/Belgrade`.

/// One ISO 3166-1 country.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Country {
    /// ISO 3166-1 alpha-2 code, upper case (`"PT"`).
    pub code: &'static str,
    /// Common English short name (`"Portugal"`, `"United States"`).
    pub name: &'static str,
    /// One representative IANA time zone, the capital's (`"Europe/Lisbon"`).
    pub timezone: &'static str,
}

/// Builds one row of [`COUNTRIES`]: code, name, time zone.
const fn entry(code: &'static str, name: &'static str, timezone: &'static str) -> Country {
    Country { code, name, timezone }
}

/// Every country, sorted by code (binary-searched by [`country`]).
pub static COUNTRIES: &[Country] = &[
    entry("AD", "Andorra", "Europe/Andorra"),
    entry("AE", "United Arab Emirates", "Asia/Dubai"),
    entry("AF", "Afghanistan", "Asia/Kabul"),
    entry("AG", "Antigua and Barbuda", "America/Antigua"),
    entry("AI", "Anguilla", "America/Anguilla"),
    entry("AL", "Albania", "Europe/Tirane"),
    entry("AM", "Armenia", "Asia/Yerevan"),
    entry("AO", "Angola", "Africa/Luanda"),
    entry("AQ", "Antarctica", "Antarctica/McMurdo"),
    entry("AR", "Argentina", "America/Argentina/Buenos_Aires"),
    entry("AS", "American Samoa", "Pacific/Pago_Pago"),
    entry("AT", "Austria", "Europe/Vienna"),
    entry("AU", "Australia", "Australia/Sydney"),
    entry("AW", "Aruba", "America/Aruba"),
    entry("AX", "Åland Islands", "Europe/Mariehamn"),
    entry("AZ", "Azerbaijan", "Asia/Baku"),
    entry("BA", "Bosnia and Herzegovina", "Europe/Sarajevo"),
    entry("BB", "Barbados", "America/Barbados"),
    entry("BD", "Bangladesh", "Asia/Dhaka"),
    entry("BE", "Belgium", "Europe/Brussels"),
    entry("BF", "Burkina Faso", "Africa/Ouagadougou"),
    entry("BG", "Bulgaria", "Europe/Sofia"),
    entry("BH", "Bahrain", "Asia/Bahrain"),
    entry("BI", "Burundi", "Africa/Bujumbura"),
    entry("BJ", "Benin", "Africa/Porto-Novo"),
    entry("BL", "Saint Barthélemy", "America/St_Barthelemy"),
    entry("BM", "Bermuda", "Atlantic/Bermuda"),
    entry("BN", "Brunei", "Asia/Brunei"),
    entry("BO", "Bolivia", "America/La_Paz"),
    entry("BQ", "Caribbean Netherlands", "America/Kralendijk"),
    entry("BR", "Brazil", "America/Sao_Paulo"),
    entry("BS", "Bahamas", "America/Nassau"),
    entry("BT", "Bhutan", "Asia/Thimphu"),
    entry("BV", "Bouvet Island", "Europe/Oslo"),
    entry("BW", "Botswana", "Africa/Gaborone"),
    entry("BY", "Belarus", "Europe/Minsk"),
    entry("BZ", "Belize", "America/Belize"),
    entry("CA", "Canada", "America/Toronto"),
    entry("CC", "Cocos (Keeling) Islands", "Indian/Cocos"),
    entry("CD", "DR Congo", "Africa/Kinshasa"),
    entry("CF", "Central African Republic", "Africa/Bangui"),
    entry("CG", "Congo", "Africa/Brazzaville"),
    entry("CH", "Switzerland", "Europe/Zurich"),
    entry("CI", "Ivory Coast", "Africa/Abidjan"),
    entry("CK", "Cook Islands", "Pacific/Rarotonga"),
    entry("CL", "Chile", "America/Santiago"),
    entry("CM", "Cameroon", "Africa/Douala"),
    entry("CN", "China", "Asia/Shanghai"),
    entry("CO", "Colombia", "America/Bogota"),
    entry("CR", "Costa Rica", "America/Costa_Rica"),
    entry("CU", "Cuba", "America/Havana"),
    entry("CV", "Cape Verde", "Atlantic/Cape_Verde"),
    entry("CW", "Curacao", "America/Curacao"),
    entry("CX", "Christmas Island", "Indian/Christmas"),
    entry("CY", "Cyprus", "Asia/Nicosia"),
    entry("CZ", "Czechia", "Europe/Prague"),
    entry("DE", "Germany", "Europe/Berlin"),
    entry("DJ", "Djibouti", "Africa/Djibouti"),
    entry("DK", "Denmark", "Europe/Copenhagen"),
    entry("DM", "Dominica", "America/Dominica"),
    entry("DO", "Dominican Republic", "America/Santo_Domingo"),
    entry("DZ", "Algeria", "Africa/Algiers"),
    entry("EC", "Ecuador", "America/Guayaquil"),
    entry("EE", "Estonia", "Europe/Tallinn"),
    entry("EG", "Egypt", "Africa/Cairo"),
    entry("EH", "Western Sahara", "Africa/El_Aaiun"),
    entry("ER", "Eritrea", "Africa/Asmara"),
    entry("ES", "Spain", "Europe/Madrid"),
    entry("ET", "Ethiopia", "Africa/Addis_Ababa"),
    entry("FI", "Finland", "Europe/Helsinki"),
    entry("FJ", "Fiji", "Pacific/Fiji"),
    entry("FK", "Falkland Islands", "Atlantic/Stanley"),
    entry("FM", "Micronesia", "Pacific/Pohnpei"),
    entry("FO", "Faroe Islands", "Atlantic/Faroe"),
    entry("FR", "France", "Europe/Paris"),
    entry("GA", "Gabon", "Africa/Libreville"),
    entry("GB", "United Kingdom", "Europe/London"),
    entry("GD", "Grenada", "America/Grenada"),
    entry("GE", "Georgia", "Asia/Tbilisi"),
    entry("GF", "French Guiana", "America/Cayenne"),
    entry("GG", "Guernsey", "Europe/Guernsey"),
    entry("GH", "Ghana", "Africa/Accra"),
    entry("GI", "Gibraltar", "Europe/Gibraltar"),
    entry("GL", "Greenland", "America/Nuuk"),
    entry("GM", "Gambia", "Africa/Banjul"),
    entry("GN", "Guinea", "Africa/Conakry"),
    entry("GP", "Guadeloupe", "America/Guadeloupe"),
    entry("GQ", "Equatorial Guinea", "Africa/Malabo"),
    entry("GR", "Greece", "Europe/Athens"),
    entry(
        "GS",
        "South Georgia and the South Sandwich Islands",
        "Atlantic/South_Georgia",
    ),
    entry("GT", "Guatemala", "America/Guatemala"),
    entry("GU", "Guam", "Pacific/Guam"),
    entry("GW", "Guinea-Bissau", "Africa/Bissau"),
    entry("GY", "Guyana", "America/Guyana"),
    entry("HK", "Hong Kong", "Asia/Hong_Kong"),
    entry("HM", "Heard Island and McDonald Islands", "Australia/Sydney"),
    entry("HN", "Honduras", "America/Tegucigalpa"),
    entry("HR", "Croatia", "Europe/Zagreb"),
    entry("HT", "Haiti", "America/Port-au-Prince"),
    entry("HU", "Hungary", "Europe/Budapest"),
    entry("ID", "Indonesia", "Asia/Jakarta"),
    entry("IE", "Ireland", "Europe/Dublin"),
    entry("IL", "Israel", "Asia/Jerusalem"),
    entry("IM", "Isle of Man", "Europe/Isle_of_Man"),
    entry("IN", "India", "Asia/Kolkata"),
    entry("IO", "British Indian Ocean Territory", "Indian/Chagos"),
    entry("IQ", "Iraq", "Asia/Baghdad"),
    entry("IR", "Iran", "Asia/Tehran"),
    entry("IS", "Iceland", "Atlantic/Reykjavik"),
    entry("IT", "Italy", "Europe/Rome"),
    entry("JE", "Jersey", "Europe/Jersey"),
    entry("JM", "Jamaica", "America/Jamaica"),
    entry("JO", "Jordan", "Asia/Amman"),
    entry("JP", "Japan", "Asia/Tokyo"),
    entry("KE", "Kenya", "Africa/Nairobi"),
    entry("KG", "Kyrgyzstan", "Asia/Bishkek"),
    entry("KH", "Cambodia", "Asia/Phnom_Penh"),
    entry("KI", "Kiribati", "Pacific/Tarawa"),
    entry("KM", "Comoros", "Indian/Comoro"),
    entry("KN", "Saint Kitts and Nevis", "America/St_Kitts"),
    entry("KP", "North Korea", "Asia/Pyongyang"),
    entry("KR", "South Korea", "Asia/Seoul"),
    entry("KW", "Kuwait", "Asia/Kuwait"),
    entry("KY", "Cayman Islands", "America/Cayman"),
    entry("KZ", "Kazakhstan", "Asia/Almaty"),
    entry("LA", "Laos", "Asia/Vientiane"),
    entry("LB", "Lebanon", "Asia/Beirut"),
    entry("LC", "Saint Lucia", "America/St_Lucia"),
    entry("LI", "Liechtenstein", "Europe/Vaduz"),
    entry("LK", "Sri Lanka", "Asia/Colombo"),
    entry("LR", "Liberia", "Africa/Monrovia"),
    entry("LS", "Lesotho", "Africa/Maseru"),
    entry("LT", "Lithuania", "Europe/Vilnius"),
    entry("LU", "Luxembourg", "Europe/Luxembourg"),
    entry("LV", "Latvia", "Europe/Riga"),
    entry("LY", "Libya", "Africa/Tripoli"),
    entry("MA", "Morocco", "Africa/Casablanca"),
    entry("MC", "Monaco", "Europe/Monaco"),
    entry("MD", "Moldova", "Europe/Chisinau"),
    entry("ME", "Montenegro", "Europe/Podgorica"),
    entry("MF", "Saint Martin", "America/Marigot"),
    entry("MG", "Madagascar", "Indian/Antananarivo"),
    entry("MH", "Marshall Islands", "Pacific/Majuro"),
    entry("MK", "North Macedonia", "Europe/Skopje"),
    entry("ML", "Mali", "Africa/Bamako"),
    entry("MM", "Myanmar", "Asia/Yangon"),
    entry("MN", "Mongolia", "Asia/Ulaanbaatar"),
    entry("MO", "Macao", "Asia/Macau"),
    entry("MP", "Northern Mariana Islands", "Pacific/Saipan"),
    entry("MQ", "Martinique", "America/Martinique"),
    entry("MR", "Mauritania", "Africa/Nouakchott"),
    entry("MS", "Montserrat", "America/Montserrat"),
    entry("MT", "Malta", "Europe/Malta"),
    entry("MU", "Mauritius", "Indian/Mauritius"),
    entry("MV", "Maldives", "Indian/Maldives"),
    entry("MW", "Malawi", "Africa/Blantyre"),
    entry("MX", "Mexico", "America/Mexico_City"),
    entry("MY", "Malaysia", "Asia/Kuala_Lumpur"),
    entry("MZ", "Mozambique", "Africa/Maputo"),
    entry("NA", "Namibia", "Africa/Windhoek"),
    entry("NC", "New Caledonia", "Pacific/Noumea"),
    entry("NE", "Niger", "Africa/Niamey"),
    entry("NF", "Norfolk Island", "Pacific/Norfolk"),
    entry("NG", "Nigeria", "Africa/Lagos"),
    entry("NI", "Nicaragua", "America/Managua"),
    entry("NL", "Netherlands", "Europe/Amsterdam"),
    entry("NO", "Norway", "Europe/Oslo"),
    entry("NP", "Nepal", "Asia/Kathmandu"),
    entry("NR", "Nauru", "Pacific/Nauru"),
    entry("NU", "Niue", "Pacific/Niue"),
    entry("NZ", "New Zealand", "Pacific/Auckland"),
    entry("OM", "Oman", "Asia/Muscat"),
    entry("PA", "Panama", "America/Panama"),
    entry("PE", "Peru", "America/Lima"),
    entry("PF", "French Polynesia", "Pacific/Tahiti"),
    entry("PG", "Papua New Guinea", "Pacific/Port_Moresby"),
    entry("PH", "Philippines", "Asia/Manila"),
    entry("PK", "Pakistan", "Asia/Karachi"),
    entry("PL", "Poland", "Europe/Warsaw"),
    entry("PM", "Saint Pierre and Miquelon", "America/Miquelon"),
    entry("PN", "Pitcairn Islands", "Pacific/Pitcairn"),
    entry("PR", "Puerto Rico", "America/Puerto_Rico"),
    entry("PS", "Palestine", "Asia/Hebron"),
    entry("PT", "Portugal", "Europe/Lisbon"),
    entry("PW", "Palau", "Pacific/Palau"),
    entry("PY", "Paraguay", "America/Asuncion"),
    entry("QA", "Qatar", "Asia/Qatar"),
    entry("RE", "Réunion", "Indian/Reunion"),
    entry("RO", "Romania", "Europe/Bucharest"),
    entry("RS", "Serbia", "Europe/Belgrade"),
    entry("RU", "Russia", "Europe/Moscow"),
    entry("RW", "Rwanda", "Africa/Kigali"),
    entry("SA", "Saudi Arabia", "Asia/Riyadh"),
    entry("SB", "Solomon Islands", "Pacific/Guadalcanal"),
    entry("SC", "Seychelles", "Indian/Mahe"),
    entry("SD", "Sudan", "Africa/Khartoum"),
    entry("SE", "Sweden", "Europe/Stockholm"),
    entry("SG", "Singapore", "Asia/Singapore"),
    entry("SH", "Saint Helena", "Atlantic/St_Helena"),
    entry("SI", "Slovenia", "Europe/Ljubljana"),
    entry("SJ", "Svalbard and Jan Mayen", "Arctic/Longyearbyen"),
    entry("SK", "Slovakia", "Europe/Bratislava"),
    entry("SL", "Sierra Leone", "Africa/Freetown"),
    entry("SM", "San Marino", "Europe/San_Marino"),
    entry("SN", "Senegal", "Africa/Dakar"),
    entry("SO", "Somalia", "Africa/Mogadishu"),
    entry("SR", "Suriname", "America/Paramaribo"),
    entry("SS", "South Sudan", "Africa/Juba"),
    entry("ST", "Sao Tome and Principe", "Africa/Sao_Tome"),
    entry("SV", "El Salvador", "America/El_Salvador"),
    entry("SX", "Sint Maarten", "America/Lower_Princes"),
    entry("SY", "Syria", "Asia/Damascus"),
    entry("SZ", "Eswatini", "Africa/Mbabane"),
    entry("TC", "Turks and Caicos Islands", "America/Grand_Turk"),
    entry("TD", "Chad", "Africa/Ndjamena"),
    entry("TF", "French Southern Territories", "Indian/Kerguelen"),
    entry("TG", "Togo", "Africa/Lome"),
    entry("TH", "Thailand", "Asia/Bangkok"),
    entry("TJ", "Tajikistan", "Asia/Dushanbe"),
    entry("TK", "Tokelau", "Pacific/Fakaofo"),
    entry("TL", "Timor-Leste", "Asia/Dili"),
    entry("TM", "Turkmenistan", "Asia/Ashgabat"),
    entry("TN", "Tunisia", "Africa/Tunis"),
    entry("TO", "Tonga", "Pacific/Tongatapu"),
    entry("TR", "Türkiye", "Europe/Istanbul"),
    entry("TT", "Trinidad and Tobago", "America/Port_of_Spain"),
    entry("TV", "Tuvalu", "Pacific/Funafuti"),
    entry("TW", "Taiwan", "Asia/Taipei"),
    entry("TZ", "Tanzania", "Africa/Dar_es_Salaam"),
    entry("UA", "Ukraine", "Europe/Kyiv"),
    entry("UG", "Uganda", "Africa/Kampala"),
    entry("UM", "US Minor Outlying Islands", "Pacific/Wake"),
    entry("US", "United States", "America/New_York"),
    entry("UY", "Uruguay", "America/Montevideo"),
    entry("UZ", "Uzbekistan", "Asia/Tashkent"),
    entry("VA", "Vatican City", "Europe/Vatican"),
    entry("VC", "Saint Vincent and the Grenadines", "America/St_Vincent"),
    entry("VE", "Venezuela", "America/Caracas"),
    entry("VG", "British Virgin Islands", "America/Tortola"),
    entry("VI", "US Virgin Islands", "America/St_Thomas"),
    entry("VN", "Vietnam", "Asia/Ho_Chi_Minh"),
    entry("VU", "Vanuatu", "Pacific/Efate"),
    entry("WF", "Wallis and Futuna", "Pacific/Wallis"),
    entry("WS", "Samoa", "Pacific/Apia"),
    entry("XK", "Kosovo", "Europe/Belgrade"),
    entry("YE", "Yemen", "Asia/Aden"),
    entry("YT", "Mayotte", "Indian/Mayotte"),
    entry("ZA", "South Africa", "Africa/Johannesburg"),
    entry("ZM", "Zambia", "Africa/Lusaka"),
    entry("ZW", "Zimbabwe", "Africa/Harare"),
];

/// Looks up a country by its upper-case alpha-2 code (`"PT"`); `None` for anything
/// else, including lower case.
///
/// ```
/// use kairos_model::country::country;
/// assert_eq!(country("PT").map(|c| c.name), Some("Portugal"));
/// assert_eq!(country("pt"), None);
/// ```
pub fn country(code: &str) -> Option<&'static Country> {
    COUNTRIES
        .binary_search_by(|entry| entry.code.cmp(code))
        .ok()
        .map(|index| &COUNTRIES[index])
}

/// Whether `code` is an upper-case alpha-2 code in [`COUNTRIES`].
pub fn is_country_code(code: &str) -> bool {
    country(code).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_strictly_sorted_without_duplicates() {
        for pair in COUNTRIES.windows(2) {
            assert!(
                pair[0].code < pair[1].code,
                "{} must sort before {}",
                pair[0].code,
                pair[1].code
            );
        }
    }

    #[test]
    fn every_code_is_two_uppercase_ascii_letters() {
        for entry in COUNTRIES {
            assert_eq!(entry.code.len(), 2, "{}", entry.code);
            assert!(entry.code.bytes().all(|b| b.is_ascii_uppercase()), "{}", entry.code);
        }
    }

    #[test]
    fn covers_all_assigned_codes_plus_kosovo() {
        assert_eq!(COUNTRIES.len(), 250);
    }

    #[test]
    fn names_are_plain() {
        for entry in COUNTRIES {
            assert!(!entry.name.is_empty(), "{}", entry.code);
            assert!(!entry.name.starts_with("the "), "{}", entry.code);
            assert!(!entry.name.starts_with("The "), "{}", entry.code);
            assert_eq!(entry.name.trim(), entry.name, "{}", entry.code);
        }
    }

    #[test]
    fn names_fit_the_gsm_default_alphabet() {
        // The letters of the GSM 03.38 default alphabet beyond ASCII.
        const GSM_LETTERS: &str = "àäåæèéìñòöøùüßÄÅÆÇÉÑÖØÜ";
        for entry in COUNTRIES {
            for ch in entry.name.chars() {
                assert!(
                    ch.is_ascii_alphanumeric() || " '(),-.".contains(ch) || GSM_LETTERS.contains(ch),
                    "{}: {ch:?} is outside the GSM default alphabet",
                    entry.code
                );
            }
        }
    }

    #[test]
    fn spot_checks() {
        let pt = country("PT").unwrap();
        assert_eq!((pt.name, pt.timezone), ("Portugal", "Europe/Lisbon"));
        let us = country("US").unwrap();
        assert_eq!((us.name, us.timezone), ("United States", "America/New_York"));
        let de = country("DE").unwrap();
        assert_eq!((de.name, de.timezone), ("Germany", "Europe/Berlin"));
        let jp = country("JP").unwrap();
        assert_eq!((jp.name, jp.timezone), ("Japan", "Asia/Tokyo"));
        let br = country("BR").unwrap();
        assert_eq!((br.name, br.timezone), ("Brazil", "America/Sao_Paulo"));
        let xk = country("XK").unwrap();
        assert_eq!((xk.name, xk.timezone), ("Kosovo", "Europe/Belgrade"));
        assert_eq!(country("AD").unwrap().name, "Andorra");
        assert_eq!(country("ZW").unwrap().name, "Zimbabwe");
        assert_eq!(country("AQ").unwrap().timezone, "Antarctica/McMurdo");
    }

    #[test]
    fn rejects_unknown_and_malformed_codes() {
        for code in ["", "P", "pt", "Pt", "PRT", "QQ", "ZZ", "UK", "EU", "XX", "P1"] {
            assert!(!is_country_code(code), "{code:?}");
        }
        assert!(is_country_code("GB"));
    }

    #[test]
    fn every_timezone_is_a_known_iana_zone() {
        for entry in COUNTRIES {
            assert!(
                entry.timezone.parse::<chrono_tz::Tz>().is_ok(),
                "{}: {}",
                entry.code,
                entry.timezone
            );
        }
    }
}
